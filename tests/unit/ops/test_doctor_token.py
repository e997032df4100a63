"""doctor's token line: a token is there to read, and a token file is its owner's only."""

from __future__ import annotations

from pathlib import Path

from hypernode_host.ops.doctor import check_token
from hypernode_host.ops.findings import Level
from hypernode_host.settings import Settings


def test_a_token_file_only_its_owner_reads_is_ok(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("tok-1\n")
    path.chmod(0o600)
    finding = check_token(Settings.from_env({"HN_NODE_TOKEN_FILE": str(path)}))
    assert (finding.level, finding.detail) == (Level.OK, f"{path} holds a token")


def test_a_token_file_others_can_read_is_a_warning_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("tok-1\n")
    path.chmod(0o644)
    finding = check_token(Settings.from_env({"HN_NODE_TOKEN_FILE": str(path)}))
    assert (finding.level, finding.fix) == (Level.WARN, f"chmod 600 {path}")
    assert "tok-1" not in finding.line()


def test_a_missing_token_file_fails_naming_the_file(tmp_path: Path) -> None:
    finding = check_token(Settings.from_env({"HN_NODE_TOKEN_FILE": str(tmp_path / "nope")}))
    assert finding.level is Level.FAIL and str(tmp_path / "nope") in finding.detail


def test_the_variable_is_enough() -> None:
    assert check_token(Settings.from_env({"HN_NODE_TOKEN": "t"})).level is Level.OK
    assert check_token(Settings.from_env({})).level is Level.FAIL
