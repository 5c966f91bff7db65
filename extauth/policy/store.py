"""The policy in force. Readers take `engine` once per Check; a reload replaces it in one assignment."""

from pathlib import Path

from extauth.policy.engine import PolicyEngine
from extauth.policy.loader import load_policies


class PolicyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = PolicyEngine(load_policies(path))
