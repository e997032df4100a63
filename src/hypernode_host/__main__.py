from hypernode_host.cli import main

main()
