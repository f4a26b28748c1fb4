"""The authorization policy: which identities may do what, read from a YAML or JSON file.

A policy is a list of rules. A rule *matches* an identity by SPIFFE ID patterns
(``identities``) and/or identity kinds (``kinds``); what it ``allow``\\ s is granted to every
identity it matches. Grants only add up: an identity may do what any matching rule allows,
and the widest task scope wins. Nothing is allowed unless a rule says so. Example::

    rules:
      - name: analysts
        identities: ["spiffe://*/agent/analyst-*"]
        allow:
          register_capabilities: ["text.*", "analysis.*"]
      - name: clients
        kinds: [client]
        allow:
          submit_tasks: true
          tasks: own            # get, watch, cancel and list their own tasks
      - name: everyone
        identities: ["*"]
        allow:
          list_agents: true

Identity patterns are ``*`` (everyone) or ``spiffe://<domain>/<kind>/<name>`` where each of
the three parts is a glob (``*``, ``?``, ``[...]``) that never spans a ``/``. A policy belongs
to one trust domain: ``*`` and rules by ``kinds`` alone match only identities of that domain
(only a pattern naming another domain matches one, and authentication refuses those callers
before the policy is asked anyway). Capability patterns are globs over capability names. A
capability that an agent of another identity offers with other schemas is registered only
where ``redefine_capabilities`` matches it (:mod:`agentmesh.orchestrator.agents.claims`);
nothing does by default. Two rules are not the policy's to relax: an agent registers only
under its own name (and only agent identities register at all), and a caller deregisters
only itself.
"""

from __future__ import annotations

import enum
import fnmatch
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from agentmesh.errors import ConfigError, NotFound
from agentmesh.security.identity import Identity, IdentityKind


class Scope(enum.IntEnum):
    """Which tasks a task action reaches: none, the caller's own, or every task."""

    NONE = 0
    OWN = 1
    ANY = 2

    @classmethod
    def parse(cls, value: object) -> Scope:
        """A scope from its lowercase name (``none``, ``own``, ``any``)."""
        if isinstance(value, Scope):
            return value
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        raise ValueError("must be one of none, own, any")


class Action(enum.StrEnum):
    """What a caller asks to do; the names are the policy file's ``allow`` keys."""

    SUBMIT_TASKS = "submit_tasks"
    GET_TASKS = "get_tasks"
    WATCH_TASKS = "watch_tasks"
    CANCEL_TASKS = "cancel_tasks"
    LIST_TASKS = "list_tasks"
    LIST_AGENTS = "list_agents"
    LIST_WORKFLOWS = "list_workflows"
    REGISTER_CAPABILITIES = "register_capabilities"
    #: Answer steps of kind ``input`` (only those whose approvers name the caller).
    PROVIDE_INPUT = "provide_input"
    #: Drain, resume and weigh agents (operator overrides of matching).
    MANAGE_AGENTS = "manage_agents"


#: Actions on tasks, answered with a :class:`Scope`.
TASK_ACTIONS = (Action.GET_TASKS, Action.WATCH_TASKS, Action.CANCEL_TASKS, Action.LIST_TASKS)


class Concealed(NotFound):
    """A refusal reported as NOT_FOUND: telling a caller that someone else's task exists
    (and that its id is right) would already leak something, so the answer is the same as for
    a task id that was never issued. It is still logged as a security event, with
    ``reason`` (which the caller never sees)."""

    def __init__(self, message: str, *, field: str | None = None, reason: str = "") -> None:
        super().__init__(message, field=field)
        self.reason = reason or message


# -- the file ------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Allow(_Strict):
    """What a rule grants."""

    submit_tasks: bool = False
    #: Shorthand for get, watch, cancel and list; an explicit one of those overrides it.
    tasks: Scope | None = None
    get_tasks: Scope | None = None
    watch_tasks: Scope | None = None
    cancel_tasks: Scope | None = None
    list_tasks: Scope | None = None
    list_agents: bool = False
    #: Read the orchestrator's workflow catalog (names, descriptions, input schemas, steps).
    list_workflows: bool = False
    #: Answer steps of kind ``input`` whose approvers name the caller (ProvideInput).
    provide_input: bool = False
    #: Drain, resume and weigh agents: take one out of rotation, or give it more or less work.
    manage_agents: bool = False
    #: Globs of the capability names an agent may register.
    register_capabilities: tuple[str, ...] = ()
    #: Globs of the capability names an agent may register even while an agent of another
    #: identity offers them with other schemas (see :mod:`agentmesh.orchestrator.agents.claims`).
    redefine_capabilities: tuple[str, ...] = ()

    @field_validator(
        "tasks", "get_tasks", "watch_tasks", "cancel_tasks", "list_tasks", mode="before"
    )
    @classmethod
    def _scope(cls, value: object) -> Scope | None:
        return None if value is None else Scope.parse(value)

    @field_validator("register_capabilities", "redefine_capabilities")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not pattern or len(pattern) > 256 or any(c.isspace() for c in pattern):
                raise ValueError(f"{pattern!r} is not a capability pattern")
        return value

    def scope(self, action: Action) -> Scope:
        """The scope this grant gives for a task action."""
        explicit: Scope | None = getattr(self, action.value)
        if explicit is not None:
            return explicit
        return self.tasks if self.tasks is not None else Scope.NONE


def check_identity_pattern(pattern: str) -> str:
    """``pattern`` if it is ``*`` or globs ``spiffe://<domain>/<kind>/<name>``; else ValueError."""
    if pattern == "*":
        return pattern
    prefix = "spiffe://"
    parts = pattern.removeprefix(prefix).split("/")
    if not pattern.startswith(prefix) or len(parts) != 3 or not all(parts):
        raise ValueError(
            f"{pattern!r} is neither '*' nor a pattern spiffe://<domain>/<kind>/<name>"
        )
    return pattern


class Rule(_Strict):
    """Who a rule is for, and what it allows them."""

    name: str = Field(min_length=1, max_length=128)
    #: SPIFFE ID patterns; empty: any identity (then ``kinds`` must be given).
    identities: tuple[str, ...] = ()
    #: Identity kinds; empty: any kind (then ``identities`` must be given).
    kinds: tuple[IdentityKind, ...] = ()
    allow: Allow = Field(default_factory=Allow)

    @field_validator("identities")
    @classmethod
    def _identities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_identity_pattern(p) for p in value)

    @model_validator(mode="after")
    def _who(self) -> Rule:
        if not self.identities and not self.kinds:
            raise ValueError("a rule needs identities or kinds (use identities: ['*'] for all)")
        return self

    def matches(self, identity: Identity, trust_domain: str) -> bool:
        """True when this rule is about ``identity``, in a policy for ``trust_domain``."""
        if self.kinds and identity.kind not in self.kinds:
            return False
        if not self.identities:
            # "every client" means every client of this mesh, not of any domain the CA signs.
            return identity.trust_domain == trust_domain
        return any(identity_matches(p, identity, trust_domain) for p in self.identities)


def identity_matches(pattern: str, identity: Identity, trust_domain: str) -> bool:
    """True when ``identity`` fits ``pattern`` (see :func:`check_identity_pattern`); ``*`` is
    every identity of ``trust_domain``."""
    if pattern == "*":
        return identity.trust_domain == trust_domain
    domain, kind, name = pattern.removeprefix("spiffe://").split("/")
    return (
        fnmatch.fnmatchcase(identity.trust_domain, domain)
        and fnmatch.fnmatchcase(identity.kind.value, kind)
        and fnmatch.fnmatchcase(identity.name, name)
    )


class PolicyDocument(_Strict):
    """The policy file's contents."""

    version: Literal[1] = 1
    rules: tuple[Rule, ...]

    @model_validator(mode="after")
    def _unique_names(self) -> PolicyDocument:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"two rules are called {rule.name!r}")
            seen.add(rule.name)
        return self


# -- decisions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one question: allowed or not, and why (naming the rule)."""

    allowed: bool
    reason: str
    #: The request field the refusal is about, if one.
    field: str | None = None


class Policy:
    """A loaded policy, answering authorization questions about identities."""

    def __init__(self, document: PolicyDocument, *, source: str, trust_domain: str) -> None:
        self.document = document
        #: Where the policy came from: a file path or "built-in default".
        self.source = source
        #: The mesh's trust domain, the only one ``*`` and ``kinds`` rules match.
        self.trust_domain = trust_domain

    def rules_for(self, identity: Identity) -> list[Rule]:
        """The rules that match ``identity``, in file order."""
        return [r for r in self.document.rules if r.matches(identity, self.trust_domain)]

    def _denied(self, identity: Identity, what: str, rules: Sequence[Rule]) -> Decision:
        matched = ", ".join(r.name for r in rules) or "none"
        return Decision(
            False, f"policy: no rule allows {identity} to {what} (rules matching it: {matched})"
        )

    def allows(self, identity: Identity, action: Action) -> Decision:
        """Whether ``identity`` may submit tasks, list agents or workflows, or manage agents."""
        rules = self.rules_for(identity)
        for rule in rules:
            if getattr(rule.allow, action.value) is True:
                return Decision(True, f"policy rule {rule.name!r}")
        return self._denied(identity, action.value.replace("_", " "), rules)

    def scope(self, identity: Identity, action: Action) -> tuple[Scope, str]:
        """The widest scope any matching rule grants for a task action, and the rule's name."""
        best, name = Scope.NONE, ""
        for rule in self.rules_for(identity):
            scope = rule.allow.scope(action)
            if scope > best:
                best, name = scope, rule.name
        return best, name

    def denied_scope(self, identity: Identity, action: Action) -> Decision:
        """The refusal for a task action whose scope is NONE."""
        return self._denied(identity, action.value.replace("_", " "), self.rules_for(identity))

    def allows_capabilities(self, identity: Identity, capabilities: Iterable[str]) -> Decision:
        """Whether agent ``identity`` may register every one of ``capabilities``.

        A refusal names the first capability no matching rule allows.
        """
        rules = self.rules_for(identity)
        patterns = [(p, r.name) for r in rules for p in r.allow.register_capabilities]
        for index, capability in enumerate(capabilities):
            if not any(fnmatch.fnmatchcase(capability, p) for p, _ in patterns):
                allowed = ", ".join(sorted({p for p, _ in patterns})) or "none"
                return Decision(
                    False,
                    f"policy: {identity} may not register capability {capability!r} "
                    f"(allowed patterns: {allowed})",
                    field=f"card.capabilities[{index}].name",
                )
        return Decision(True, ", ".join(sorted({name for _, name in patterns})))

    def allows_redefining(self, identity: Identity, capability: str) -> bool:
        """Whether agent ``identity`` may offer ``capability`` with its own schemas while an
        agent of another identity offers it with other ones."""
        return any(
            fnmatch.fnmatchcase(capability, pattern)
            for rule in self.rules_for(identity)
            for pattern in rule.allow.redefine_capabilities
        )


#: Today's behaviour as a policy: agents register as themselves with any capability, clients
#: and admins submit, list the workflows they can submit and answer the questions of steps
#: whose approvers name them, owners see and cancel their own tasks, admins see every task
#: and manage agents, any identity lists agents (every rule here is by kind or ``*``, so of
#: the policy's domain only).
DEFAULT_POLICY_DOCUMENT: dict[str, Any] = {
    "version": 1,
    "rules": [
        {"name": "agents", "kinds": ["agent"], "allow": {"register_capabilities": ["*"]}},
        {
            "name": "submitters",
            "kinds": ["client", "admin"],
            "allow": {"submit_tasks": True, "list_workflows": True, "provide_input": True},
        },
        {"name": "owners", "identities": ["*"], "allow": {"tasks": "own"}},
        {"name": "admins", "kinds": ["admin"], "allow": {"tasks": "any", "manage_agents": True}},
        {"name": "everyone", "identities": ["*"], "allow": {"list_agents": True}},
    ],
}


def default_policy(trust_domain: str) -> Policy:
    """The built-in policy of the mesh ``trust_domain``, used when no policy file is configured."""
    return Policy(
        PolicyDocument.model_validate(DEFAULT_POLICY_DOCUMENT),
        source="built-in",
        trust_domain=trust_domain,
    )


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def config_error(exc: PydanticValidationError, source: str) -> ConfigError:
    """A ConfigError naming the first field of a file that pydantic refused."""
    first = exc.errors()[0]
    more = exc.error_count() - 1
    return ConfigError(
        f"{source}: {_location(first['loc'])}: {first['msg']}"
        + (f" (and {more} more)" if more else "")
    )


def read_document(path: Path) -> Any:
    """The parsed contents of a YAML or JSON file; ConfigError when unreadable or malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    is_json = path.suffix.lower() == ".json"
    try:
        return json.loads(text) if is_json else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid {'JSON' if is_json else 'YAML'}: {exc}") from None


def parse_policy(data: Any, *, source: str, trust_domain: str) -> Policy:
    """The policy of mesh ``trust_domain`` in the parsed contents of a policy file;
    ConfigError naming the bad field."""
    try:
        document = PolicyDocument.model_validate(data)
    except PydanticValidationError as exc:
        raise config_error(exc, source) from None
    return Policy(document, source=source, trust_domain=trust_domain)


def load_policy(path: Path, *, trust_domain: str) -> Policy:
    """The policy in ``path`` (YAML, or JSON when it ends in .json) for mesh ``trust_domain``;
    ConfigError when invalid."""
    return parse_policy(read_document(path), source=str(path), trust_domain=trust_domain)
