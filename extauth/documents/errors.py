"""Configuration errors that name the file, the line and the field."""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    file: Path
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        """One line, whatever a library put in the message: one issue per line is what operators and CI grep."""
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        message = " ".join(self.message.splitlines())
        return f"{where}: {self.field}: {message}" if self.field else f"{where}: {message}"


class ConfigError(Exception):
    """One or more problems in a configuration or policy file; every issue is reported, not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))

    @classmethod
    def single(cls, file: Path, message: str, line: int | None = None, field: str = "") -> "ConfigError":
        return cls([ConfigIssue(file, line, field, message)])


class FieldValueError(ValueError):
    """A model check's finding about one of its fields: reported at that field's line, not the model's."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def sorted_issues(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """By file, then line (file-wide issues first, then the order found); an issue found twice is reported once."""
    return sorted(dict.fromkeys(issues), key=lambda issue: (str(issue.file), issue.line or 0))
