"""Job execution: the Dramatiq broker and actor, the runner, the Docker adapter, log capture."""
