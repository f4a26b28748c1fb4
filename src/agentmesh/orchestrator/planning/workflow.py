"""Workflows: named, reusable plans written as YAML or JSON files, and catalogs of them.

A workflow file holds ``name``, ``description``, an optional ``input_schema`` for the task
input, ``steps`` (the fields of :class:`~agentmesh.models.StepSpec`, snake_case) and an optional
``aggregate`` spec. Loading checks the file's shape and its DAG; the capabilities are checked
when a task is planned, against the agents registered then.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final

import jsonschema
import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentmesh.errors import NotFound, ValidationError, field_path
from agentmesh.models import JSON, Plan, StepSpec
from agentmesh.orchestrator.planning.validate import validate_plan

SUFFIXES: Final = (".yaml", ".yml", ".json")
"""File name endings a catalog directory is searched for."""


class Workflow(BaseModel):
    """A named plan template; its inputs come from the task's ``input``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9._-]{0,63}$")
    description: str = ""
    input_schema: dict[str, JSON] | None = None
    steps: tuple[StepSpec, ...] = Field(min_length=1)
    aggregate: dict[str, JSON] = Field(default_factory=dict)

    @field_validator("input_schema")
    @classmethod
    def _is_schema(cls, schema: dict[str, JSON] | None) -> dict[str, JSON] | None:
        if schema is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a JSON schema: {exc.message}") from None
        return schema

    def to_plan(self) -> Plan:
        """The workflow's steps and aggregate spec as a plan."""
        return Plan(steps=self.steps, aggregate=self.aggregate)

    def check_input(self, input: Mapping[str, JSON]) -> None:
        """Raise :class:`~agentmesh.errors.ValidationError` (field ``input...``) when ``input``
        does not fit the workflow's ``input_schema``."""
        if self.input_schema is None:
            return
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(self.input_schema).iter_errors(input)
        )
        if error is not None:
            field = "input"
            for key in error.absolute_path:
                field = field_path(field, key)
            raise ValidationError(
                f"does not match workflow {self.name!r}: {error.message}", field=field
            )


def load_workflow(path: str | os.PathLike[str]) -> Workflow:
    """The workflow in a ``.yaml``, ``.yml`` or ``.json`` file, shape and DAG checked.

    Raises :class:`~agentmesh.errors.NotFound` for a missing file and
    :class:`~agentmesh.errors.ValidationError`, ``field`` starting with the file name, for a
    bad one.
    """
    return _load(Path(path))


def parse_workflow(data: JSON, *, source: str = "workflow") -> Workflow:
    """A workflow from already-parsed JSON; ``source`` prefixes the ``field`` of errors."""
    if not isinstance(data, Mapping):
        raise ValidationError("a workflow must be an object", field=source)
    try:
        workflow = Workflow.model_validate(data)
    except pydantic.ValidationError as exc:
        error = ValidationError.from_pydantic(exc)
        raise ValidationError(error.message, field=f"{source}:{error.field}") from None
    try:
        validate_plan(workflow.to_plan())
    except ValidationError as exc:
        where = (exc.field or "plan").removeprefix("plan").removeprefix(".")
        raise ValidationError(exc.message, field=f"{source}:{where}") from None
    return workflow


class Catalog:
    """The workflows an orchestrator knows, by name."""

    def __init__(self, workflows: Iterable[Workflow] = ()) -> None:
        self._workflows: dict[str, Workflow] = {}
        for workflow in workflows:
            self._add(workflow, source=workflow.name)

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str]) -> Catalog:
        """Every workflow file (``.yaml``, ``.yml``, ``.json``) directly in ``path``."""
        directory = Path(path)
        if not directory.is_dir():
            raise NotFound(f"no workflow directory {str(directory)!r}", field="workflows")
        return cls._from_entries(directory.iterdir())

    @classmethod
    def builtin(cls) -> Catalog:
        """The workflows shipped with agentmesh, for the demo agents."""
        return cls._from_entries(
            resources.files("agentmesh.orchestrator.planning").joinpath("workflows").iterdir()
        )

    @classmethod
    def _from_entries(cls, entries: Iterable[Traversable]) -> Catalog:
        catalog = cls()
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_file() and entry.name.endswith(SUFFIXES):
                catalog._add(_load(entry), source=entry.name)
        return catalog

    def _add(self, workflow: Workflow, *, source: str) -> None:
        if workflow.name in self._workflows:
            raise ValidationError(f"a second workflow named {workflow.name!r}", field=source)
        self._workflows[workflow.name] = workflow

    def overlay(self, other: Catalog) -> Catalog:
        """A catalog of this one's workflows and ``other``'s, ``other`` winning on a name."""
        return Catalog({**self._workflows, **other._workflows}.values())

    def get(self, name: str) -> Workflow:
        """The workflow called ``name``; raises :class:`~agentmesh.errors.NotFound`."""
        try:
            return self._workflows[name]
        except KeyError:
            known = ", ".join(self.names) or "none"
            raise NotFound(f"no workflow {name!r}; known: {known}", field="workflow") from None

    @property
    def names(self) -> tuple[str, ...]:
        """Workflow names, sorted."""
        return tuple(sorted(self._workflows))

    def __contains__(self, name: object) -> bool:
        return name in self._workflows

    def __iter__(self) -> Iterator[Workflow]:
        return (self._workflows[name] for name in self.names)

    def __len__(self) -> int:
        return len(self._workflows)


def _load(entry: Traversable) -> Workflow:
    source = entry.name
    try:
        text = entry.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"no workflow file {str(entry)!r}", field=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read: {exc}", field=source) from None
    if source.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"not valid JSON: {exc}", field=source) from None
    elif source.endswith((".yaml", ".yml")):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValidationError(f"not valid YAML: {exc}", field=source) from None
    else:
        raise ValidationError(f"a workflow file ends in one of {', '.join(SUFFIXES)}", field=source)
    return parse_workflow(data, source=source)
