"""xAPI statements (Experience API 1.0.x) translated into SPEC 2 attempts.

A statement is translated once, at ingest, into the attempt the engine counts, with every
value stamped in (ids, sub-topic, difficulty, learning mode, time): the attempts topic
stays the one source of truth, whatever the mapping says later. :func:`translate` gives

- an attempt (:class:`Translated`): a verb and object type the mapping counts, with a
  graded result (``result.success``);
- :class:`Ignored`, with the reason: a valid statement the engine does not count (another
  verb, an object that is not a question, no result, an ungraded answer);
- :class:`~performance_engine.errors.InvalidAttemptError` with an ``xapi_*`` error class
  and a reason naming the field, for a statement that breaks the rules (not JSON, not
  xAPI 1.0.x, an actor, verb or object missing, a bad timestamp, over 64 KiB).

Identifiers become the engine's 63-bit ids deterministically (:func:`xapi_id`): the
XXH3-64 hash of a kind and the identifier's text, its top bit cleared (0 becomes 1). A
learner is identified by their ``account`` (``homePage`` and ``name``), ``mbox``,
``mbox_sha1sum`` or ``openid``, in that order; the mapping (:class:`XapiMapping`, a TOML
section) says which verbs and object types count, which context activity is the
sub-topic, where the difficulty comes from and the learning mode.
"""

from __future__ import annotations

import contextlib
import csv
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import xxhash

from performance_engine.errors import ConfigurationError, InvalidAttemptError
from performance_engine.metrics.attempt import MAX_VALUE_BYTES, parse_occurred_at
from performance_engine.metrics.types import DIFFICULTIES
from performance_engine.settings import Settings

__all__ = [
    "ANSWERED",
    "ATTEMPTED",
    "EVALUATED",
    "INTERACTION",
    "VOIDED",
    "Ignored",
    "Statement",
    "Translated",
    "Void",
    "XapiMapping",
    "comparable_form",
    "learner_identifier",
    "load_mapping",
    "read_statement",
    "translate",
    "translate_statement",
    "xapi_id",
    "xapi_mapping",
]

EVALUATED = "https://w3id.org/xapi/acrossx/verbs/evaluated"
ANSWERED = "http://adlnet.gov/expapi/verbs/answered"
ATTEMPTED = "http://adlnet.gov/expapi/verbs/attempted"
VOIDED = "http://adlnet.gov/expapi/verbs/voided"
INTERACTION = "http://adlnet.gov/expapi/activities/cmi.interaction"
ATTEMPT_ID_EXTENSION = "http://id.tincanapi.com/extension/attempt-id"
_VERSION = re.compile(r"^1\.0(\.[0-9]+)?$")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MASK = (1 << 63) - 1
#: By fitted class (0, 1, 2): the order of the engine's difficulties.
DIFFICULTY_NAMES = tuple(d.value for d in DIFFICULTIES)


class XapiMapping(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How statements become attempts (the ``[xapi]`` section of a TOML file)."""

    #: Verbs whose statements count.
    verbs: tuple[str, ...] = (EVALUATED, ANSWERED)
    #: Object definition types that count (questions).
    object_types: tuple[str, ...] = (INTERACTION,)
    #: Which context activities hold the sub-topic: ``parent`` or ``grouping``; the first
    #: whose id matches ``sub_topic_pattern`` (a regular expression, searched) is it.
    sub_topic_from: str = "parent"
    sub_topic_pattern: str = ""
    #: Where the difficulty comes from, the first that gives one: an extension (of the
    #: result, the context or the object's definition) holding easy, medium or hard; the
    #: object's id in ``difficulties`` (the section ``[xapi.difficulties]``, and the CSV file
    #: ``difficulty_file`` with columns ``object_id,difficulty``, relative to the TOML
    #: file); the question's fitted class when fitted parameters hold one
    #: (``use_fitted_difficulty``); ``default_difficulty``.
    difficulty_extension: str = ""
    difficulties: dict[str, str] = msgspec.field(default_factory=dict)
    difficulty_file: str = ""
    use_fitted_difficulty: bool = True
    default_difficulty: str = "medium"
    #: The learning mode: the first pattern of ``learning_modes`` (regular expression ->
    #: mode, the section ``[xapi.learning_modes]``) found in the sub-topic's id or the
    #: object's id, else ``learning_mode``.
    learning_modes: dict[str, str] = msgspec.field(default_factory=dict)
    learning_mode: str = "standard"
    #: The context extension holding the attempt number.
    attempt_extension: str = ATTEMPT_ID_EXTENSION
    #: A counted statement whose ``context.statement`` refers to another statement is one
    #: question of a multi-question problem, and the statement it refers to is the whole
    #: problem's: that one does not count (``ignored:multi_question_parent``).
    parent_from_context_statement: bool = True

    def __post_init__(self) -> None:
        if self.sub_topic_from not in ("parent", "grouping"):
            raise ConfigurationError(
                f"[xapi] sub_topic_from must be parent or grouping, not {self.sub_topic_from!r}"
            )
        try:
            re.compile(self.sub_topic_pattern)
        except re.error as exc:
            raise ConfigurationError(f"[xapi] sub_topic_pattern: {exc}") from None
        for where, value in [
            ("default_difficulty", self.default_difficulty),
            *((f"difficulties[{k!r}]", v) for k, v in self.difficulties.items()),
        ]:
            if value not in DIFFICULTY_NAMES:
                raise ConfigurationError(
                    f"[xapi] {where} must be easy, medium or hard, not {value!r}"
                )
        for pattern in self.learning_modes:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigurationError(f"[xapi] learning_modes[{pattern!r}]: {exc}") from None


def load_mapping(path: Path | None) -> XapiMapping:
    """The ``[xapi]`` section of a TOML file; the defaults without one."""
    if path is None:
        return XapiMapping()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from None
    try:
        mapping = msgspec.convert(document.get("xapi", {}), XapiMapping)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(f"{path}: [xapi] {exc}") from None
    if not mapping.difficulty_file:
        return mapping
    listed = _difficulty_file(path.parent / mapping.difficulty_file)
    return msgspec.structs.replace(mapping, difficulties={**listed, **mapping.difficulties})


def _difficulty_file(path: Path) -> dict[str, str]:
    """``object_id,difficulty`` rows of a CSV file (with that header)."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ConfigurationError(f"[xapi] difficulty_file: {exc}") from None
    found: dict[str, str] = {}
    for number, row in enumerate(rows, start=2):
        object_id, difficulty = row.get("object_id"), (row.get("difficulty") or "").lower()
        if not object_id or difficulty not in DIFFICULTY_NAMES:
            raise ConfigurationError(
                f"{path}:{number}: want object_id,difficulty with easy, medium or hard"
            )
        found[object_id] = difficulty
    return found


_MAPPINGS: dict[Path | None, XapiMapping] = {}


def xapi_mapping(settings: Settings) -> XapiMapping:
    """The mapping of ``PERF_ENGINE_XAPI_MAPPING`` (read once per process)."""
    path = settings.xapi_mapping_path
    found = _MAPPINGS.get(path)
    if found is None:
        found = _MAPPINGS[path] = load_mapping(path)
    return found


def xapi_id(kind: str, text: str) -> int:
    """The engine's id (1 to 2^63-1) for an xAPI identifier of a kind (``learner``,
    ``question``, ``sub_topic``): XXH3-64 of ``kind``, a NUL and the text, UTF-8, with
    the top bit cleared; 0 becomes 1."""
    return (xxhash.xxh3_64_intdigest(f"{kind}\x00{text}".encode()) & _MASK) or 1


# -- the statement, as far as the engine reads it -------------------------------------


class _Account(msgspec.Struct):
    homePage: str
    name: str


class _Actor(msgspec.Struct):
    account: _Account | None = None
    mbox: str | None = None
    mbox_sha1sum: str | None = None
    openid: str | None = None


class _Verb(msgspec.Struct):
    id: str


class _Definition(msgspec.Struct):
    type: str | None = None
    extensions: dict[str, Any] | None = None


class _Object(msgspec.Struct):
    id: str
    objectType: str = "Activity"
    definition: _Definition | None = None


class _Result(msgspec.Struct):
    success: bool | None = None
    extensions: dict[str, Any] | None = None


class _Activity(msgspec.Struct):
    id: str


class _ContextActivities(msgspec.Struct):
    parent: list[_Activity] | _Activity | None = None
    grouping: list[_Activity] | _Activity | None = None


class _StatementRef(msgspec.Struct):
    id: str
    objectType: str = "StatementRef"


class _Context(msgspec.Struct):
    contextActivities: _ContextActivities | None = None
    extensions: dict[str, Any] | None = None
    statement: _StatementRef | None = None


class Statement(msgspec.Struct):
    """A statement as far as the engine reads it (other fields are ignored)."""

    actor: _Actor
    verb: _Verb
    object: _Object
    id: str | None = None
    result: _Result | None = None
    context: _Context | None = None
    timestamp: str | None = None
    version: str | None = None


_DECODE = msgspec.json.Decoder(Statement).decode


class Translated(msgspec.Struct, frozen=True):
    """A statement's attempt (SPEC 2, as a JSON object), the learner's xAPI identifier
    (for the reverse lookup), and the id of the statement of the whole problem this one
    is a question of (``context.statement``; None if none)."""

    attempt: dict[str, Any]
    learner: str
    parent: str | None = None


class Ignored(msgspec.Struct, frozen=True):
    """A valid statement the engine does not count, and why."""

    reason: str


class Void(msgspec.Struct, frozen=True):
    """A voiding statement: the id of the statement it voids (lower case)."""

    target: str


def learner_identifier(actor: _Actor) -> str | None:
    """The learner's identifier as the engine hashes it (None if the actor has none)."""
    if actor.account is not None:
        return f"account:{actor.account.homePage}|{actor.account.name}"
    if actor.mbox is not None:
        return f"mbox:{actor.mbox.lower()}"
    if actor.mbox_sha1sum is not None:
        return f"mbox_sha1sum:{actor.mbox_sha1sum.lower()}"
    if actor.openid is not None:
        return f"openid:{actor.openid}"
    return None


def translate(
    value: bytes,
    mapping: XapiMapping,
    received_ms: int,
    fitted: Mapping[int, int] | None = None,
) -> Translated | Ignored | Void:
    """A statement's attempt, a void, or why it is not counted (see the module docstring);
    InvalidAttemptError for one that breaks the rules. ``received_ms`` is the time of
    receipt, the attempt's time when the statement has no ``timestamp``; ``fitted``: the
    questions' fitted difficulty classes (question id -> 0, 1, 2), if any."""
    return translate_statement(read_statement(value), mapping, received_ms, fitted)


def read_statement(value: bytes) -> Statement:
    """A statement's JSON, read as far as the engine reads it; InvalidAttemptError if it
    is too large, not JSON or of the wrong shape."""
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidAttemptError(
            "xapi_too_large", f"the statement has {len(value)} bytes, over {MAX_VALUE_BYTES}"
        )
    try:
        statement = _DECODE(value)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if text.startswith("Object missing"):
            raise InvalidAttemptError("xapi_missing_field", text) from None
        raise InvalidAttemptError("xapi_invalid", text) from None
    except msgspec.DecodeError as exc:
        raise InvalidAttemptError("xapi_not_json", f"not a JSON statement: {exc}") from None
    except RecursionError:
        raise InvalidAttemptError(
            "xapi_invalid", "the statement is nested too deeply to be read"
        ) from None
    return statement


#: What xAPI's statement comparison ignores at the top level (1.0.3, part two, 2.3.1):
#: what an LRS may assign or change (the id is the key it is compared under) and the
#: attachments, which are not part of a statement.
_NOT_COMPARED = ("id", "authority", "stored", "version", "attachments")


def comparable_form(value: bytes) -> bytes:
    """The statement (a JSON value that :func:`read_statement` read) in the form two
    statements with one id are compared in, as xAPI's statement comparison asks: keys
    sorted and no whitespace; without what an LRS may assign (``id``, ``authority``,
    ``stored``, ``version``) or what is not part of a statement (attachments, a verb's
    ``display``, an activity's ``definition``); the ``timestamp`` as its point in time to
    the millisecond; a group's members in a fixed order. Every other difference counts."""
    try:
        document = msgspec.json.decode(value)
    except (msgspec.DecodeError, RecursionError):
        return value
    if not isinstance(document, dict):
        return value
    for key in _NOT_COMPARED:
        document.pop(key, None)
    stamp = document.get("timestamp")
    if isinstance(stamp, str):
        with contextlib.suppress(InvalidAttemptError):  # refused anyway
            document["timestamp"] = parse_occurred_at(stamp)
    if isinstance(verb := document.get("verb"), dict):
        verb.pop("display", None)
    _without_definition(document.get("object"))
    context = document.get("context")
    activities = context.get("contextActivities") if isinstance(context, dict) else None
    if isinstance(activities, dict):
        for found in activities.values():
            for activity in found if isinstance(found, list) else [found]:
                _without_definition(activity)
    for agent in (document.get("actor"), document.get("object")):
        if isinstance(agent, dict) and isinstance(members := agent.get("member"), list):
            agent["member"] = sorted(members, key=lambda m: msgspec.json.encode(m, order="sorted"))
    return msgspec.json.encode(document, order="sorted")


def _without_definition(activity: Any) -> None:
    if isinstance(activity, dict) and activity.get("objectType", "Activity") == "Activity":
        activity.pop("definition", None)


def translate_statement(
    statement: Statement,
    mapping: XapiMapping,
    received_ms: int,
    fitted: Mapping[int, int] | None = None,
) -> Translated | Ignored | Void:
    """:func:`translate` of a statement already read (:func:`read_statement`)."""
    if statement.id is not None and not _UUID.fullmatch(statement.id):
        raise InvalidAttemptError("xapi_invalid", f"id: {statement.id[:40]!r} is not a UUID")
    if statement.version is not None and not _VERSION.fullmatch(statement.version):
        raise InvalidAttemptError(
            "xapi_version", f"version {statement.version[:32]!r} is not xAPI 1.0.x"
        )
    occurred = received_ms
    if statement.timestamp is not None:
        try:
            occurred = parse_occurred_at(statement.timestamp)
        except InvalidAttemptError as exc:
            raise InvalidAttemptError("xapi_bad_timestamp", f"timestamp: {exc.reason}") from None
    learner = learner_identifier(statement.actor)
    if learner is None:
        raise InvalidAttemptError(
            "xapi_missing_field",
            "actor: no account, mbox, mbox_sha1sum or openid identifies the learner",
        )
    if statement.verb.id == VOIDED:
        return _void(statement)
    if statement.verb.id not in mapping.verbs:
        return Ignored("verb_not_counted")
    definition = statement.object.definition
    if definition is None or definition.type not in mapping.object_types:
        return Ignored("object_not_counted")
    result = statement.result
    if result is None:
        return Ignored("no_result")
    if result.success is None:
        return Ignored("ungraded")
    if statement.id is None:
        raise InvalidAttemptError("xapi_missing_field", "id: a counted statement needs its id")
    sub_topic = _sub_topic(statement, mapping)
    if sub_topic is None:
        return Ignored("no_sub_topic")
    question = xapi_id("question", statement.object.id)
    attempt: dict[str, Any] = {
        "attempt_id": statement.id.lower(),
        "user_id": xapi_id("learner", learner),
        "sub_topic_id": xapi_id("sub_topic", sub_topic),
        "learning_mode": _learning_mode(mapping, sub_topic, statement.object.id),
        "question_id": question,
        "difficulty": _difficulty(statement, mapping, fitted.get(question) if fitted else None),
        "is_correct": result.success,
        "occurred_at": occurred,
    }
    number = (
        (statement.context.extensions or {}).get(mapping.attempt_extension)
        if (statement.context is not None)
        else None
    )
    if isinstance(number, int) and not isinstance(number, bool) and number >= 1:
        attempt["attempt_number"] = number
    return Translated(attempt, learner, _parent(statement, mapping))


def _parent(statement: Statement, mapping: XapiMapping) -> str | None:
    context = statement.context
    if not mapping.parent_from_context_statement or context is None:
        return None
    ref = context.statement
    if ref is None or ref.objectType != "StatementRef" or not _UUID.fullmatch(ref.id):
        return None
    parent = ref.id.lower()
    return None if parent == (statement.id or "").lower() else parent


def _learning_mode(mapping: XapiMapping, sub_topic: str, object_id: str) -> str:
    for pattern, mode in mapping.learning_modes.items():
        if re.search(pattern, sub_topic) or re.search(pattern, object_id):
            return mode
    return mapping.learning_mode


def _void(statement: Statement) -> Void:
    target = statement.object
    if target.objectType != "StatementRef":
        raise InvalidAttemptError(
            "xapi_invalid", "object: a voiding statement's object must be a StatementRef"
        )
    if not _UUID.fullmatch(target.id):
        raise InvalidAttemptError("xapi_invalid", f"object.id: {target.id[:40]!r} is not a UUID")
    if statement.id is None:
        raise InvalidAttemptError("xapi_missing_field", "id: a voiding statement needs its id")
    return Void(target.id.lower())


def _activities(found: list[_Activity] | _Activity | None) -> list[_Activity]:
    if found is None:
        return []
    return found if isinstance(found, list) else [found]


def _sub_topic(statement: Statement, mapping: XapiMapping) -> str | None:
    context = statement.context
    if context is None or context.contextActivities is None:
        return None
    activities = _activities(getattr(context.contextActivities, mapping.sub_topic_from))
    pattern = re.compile(mapping.sub_topic_pattern)
    for activity in activities:
        if pattern.search(activity.id):
            return activity.id
    return None


def _difficulty(statement: Statement, mapping: XapiMapping, fitted: int | None) -> str:
    name = mapping.difficulty_extension
    if name:
        places = [
            statement.result.extensions if statement.result is not None else None,
            statement.context.extensions if statement.context is not None else None,
            statement.object.definition.extensions if statement.object.definition else None,
        ]
        for extensions in places:
            found = (extensions or {}).get(name)
            if isinstance(found, str) and found.lower() in DIFFICULTY_NAMES:
                return found.lower()
    listed = mapping.difficulties.get(statement.object.id)
    if listed is not None:
        return listed
    if fitted is not None and mapping.use_fitted_difficulty and 0 <= fitted < 3:
        return DIFFICULTY_NAMES[fitted]
    return mapping.default_difficulty
