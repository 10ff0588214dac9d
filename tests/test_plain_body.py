"""The plain bodies (``http/plain_body.py``, checked by msgspec) against their pydantic models (``chat_body.py``).

The direct routes take a body's field values from msgspec's check when it accepts the body, and ask the model
otherwise. That is right only while msgspec accepts no body that the model refuses, and reads every body it
accepts as the model does. Both are checked here: field by field at each bound, on bodies shaped like the clients'
(the OpenAI SDK's, the bench's), and on bodies generated around the bounds (hypothesis). Values are compared with
their types (``1`` and ``1.0`` are different JSON for an upstream). The corpus must hold bodies of both kinds, so
that the comparison is not vacuous.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from ssegate.http.chat_body import MAX_TEXT, ChatCompletionIn, NativeChatIn
from ssegate.http.direct_routes import plain_fields
from ssegate.http.plain_body import Plain, PlainChatCompletion, PlainNativeChat

PAIRS: list[tuple[type[Plain], type[BaseModel]]] = [(PlainNativeChat, NativeChatIn),
                                                    (PlainChatCompletion, ChatCompletionIn)]
IDS = ["native", "openai"]
HI = [{"role": "user", "content": "hi"}]


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same types, all the way down (``True == 1 == 1.0`` is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a == 0:
        return str(a) == str(b)  # -0.0 and 0.0
    return bool(a == b)


def _model(model: type[BaseModel], raw: Any) -> dict[str, Any] | None:
    try:
        return model.model_validate(raw).__dict__
    except ValidationError:
        return None


def _check(plain: type[Plain], model: type[BaseModel], raw: Any) -> str:
    """``accepted`` (msgspec's reading equals the model's) or ``model`` (msgspec refused: the model decides);
    a failed assertion where msgspec accepts what the model refuses or reads it otherwise."""
    fast = plain_fields(raw, plain)
    if fast is None:
        return "model"
    slow = _model(model, raw)
    assert slow is not None, f"msgspec accepts a body the model refuses: {raw!r}"
    assert set(fast) == set(slow), "the fields differ"
    for name, value in slow.items():
        if name == "messages":  # read from the parsed JSON, beside a model too
            continue
        if name == "stream_options":
            assert (value is None) == (fast[name] is None)
            if value is not None:
                assert _same(fast[name].include_usage, value.include_usage)
                assert _same(fast[name].include_obfuscation, value.include_obfuscation)
            continue
        assert _same(fast[name], value), f"{name}: msgspec reads {fast[name]!r}, the model {value!r} ({raw!r})"
    return "accepted"


@pytest.mark.parametrize(("plain", "model"), PAIRS, ids=IDS)
def test_a_plain_struct_has_its_models_fields_and_defaults(plain: type[Plain], model: type[BaseModel]) -> None:
    assert set(plain.__struct_fields__) == set(model.model_fields)
    fast, slow = plain_fields({"messages": HI}, plain), _model(model, {"messages": HI})
    assert fast is not None and slow is not None
    for name in plain.__struct_fields__:
        if name != "messages":
            assert _same(fast[name], slow[name]), name


# (field, values): each value in a body of one text message, on both endpoints
FIELD_VALUES: list[tuple[str, list[Any]]] = [
    ("model", [None, "", "m", "m" * 256, "m" * 257, 5, ["m"]]),
    ("max_tokens", [None, 1, 10_000_000, 0, -3, 10_000_001, 5.0, 5.5, "5", True, False, 2**70]),
    ("max_completion_tokens", [None, 1, 10_000_000, 0, 10_000_001, 7.0, "7", True]),
    ("temperature", [None, 0, 2, 1, 0.0, -0.0, 1.5, 2.0, 2.0000001, -0.1, "1", True, 1e308]),
    ("stop", [None, "", "x", "x" * MAX_TEXT, "x" * (MAX_TEXT + 1), [], ["a"], ["a"] * 16, ["a"] * 17, [1], 5,
              [None]]),
    ("tools", [None, [], [{"type": "function", "function": {"name": "f"}}], "x"]),
    ("tool_choice", [None, "none", "auto", "x"]),
    ("response_format", [None, {"type": "text"}, {"type": "x"}]),
    ("parallel_tool_calls", [None, True, False, 1, 0, "true"]),
    ("reasoning_effort", [None, "low", "minimal", "a_b", "", "Low", "a-b", "a" * 32, "a" * 33, 1]),
    ("n", [None, 1, 2, 0, -1, 1.0, True, "1"]),
    ("logprobs", [None, False, True, 0, "false"]),
    ("top_logprobs", [None, 0, 5, 5.0, True]),
    ("resume_grace_s", [None, 0, 0.0, 30, 86400, 86400.5, -1, "3", True]),
    ("stream", [None, True, False, 1, "true"]),
    ("stream_options", [None, {}, {"include_usage": True}, {"include_usage": False, "x": 1}, {"include_usage": 1},
                        {"include_usage": None}, {"include_obfuscation": False}, {"include_obfuscation": "no"}, [],
                        "x"]),
    ("unknown_field", [None, 1, "x", {"a": [1]}]),
]

MESSAGES: list[Any] = [
    HI,
    [{"role": r, "content": "x"} for r in ("system", "developer", "user", "assistant")],
    [{"role": "user", "content": ""}],
    [{"role": "user", "content": "x" * MAX_TEXT}],
    [{"role": "user", "content": "x" * (MAX_TEXT + 1)}],
    [{"role": "user", "content": "\U0001f600" * MAX_TEXT}],  # characters, not bytes, on both sides
    [{"role": "user", "content": "\U0001f600" * (MAX_TEXT + 1)}],
    [{"role": "user", "content": "hi", "name": "n"}],
    [{"role": "user", "content": "hi", "name": "n" * 256}],
    [{"role": "user", "content": "hi", "name": "n" * 257}],
    [{"role": "user", "content": "hi", "name": None}],
    [{"role": "user", "content": "hi", "name": 5}],
    [{"role": "user", "content": "hi", "extra": 1}],
    [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    [{"role": "user", "content": None}],
    [{"role": "user", "content": 5}],
    [{"role": "user"}],
    [{"content": "hi"}],
    [{"role": "assistant", "content": None}],
    [{"role": "assistant", "content": "x", "tool_calls": []}],
    [{"role": "assistant", "content": "x", "reasoning": "r"}],
    [{"role": "tool", "content": "x", "tool_call_id": "c"}],
    [{"role": "function", "content": "x", "name": "f"}],
    [{"role": "wizard", "content": "hi"}],
    [],
    [{"role": "user", "content": "x"}] * 2000,
    [{"role": "user", "content": "x"}] * 2001,
    ["hi"],
    "hi",
    None,
]

# what clients send: the bench's bodies, the OpenAI SDK's (stream, stream_options, its own fields), a chat page's
CLIENT_BODIES: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "hi tokens=1 interval=0 ttft=0"}], "model": "bench"},
    {"messages": [{"role": "user", "content": "hi tokens=1 interval=0 ttft=0"}], "model": "bench", "stream": True},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}], "model": "gpt-4o-mini",
     "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.2, "max_tokens": 64},
    {"messages": HI, "model": "m", "stream": True, "user": "u-1", "seed": 3, "metadata": {"k": "v"}},
    {"messages": HI, "resume_grace_s": 30, "max_tokens": 100},
]


def _cases() -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = [(f"{name}={value!r}"[:60], {"messages": HI, name: value})
                                    for name, values in FIELD_VALUES for value in values]
    cases += [(f"messages#{i}", {"messages": m}) for i, m in enumerate(MESSAGES)]
    cases += [(f"client#{i}", body) for i, body in enumerate(CLIENT_BODIES)]
    cases += [("no messages", {"model": "x"}), ("a list", [HI]), ("a string", "x"), ("null", None)]
    return cases


@pytest.mark.parametrize(("plain", "model"), PAIRS, ids=IDS)
def test_msgspec_accepts_no_body_its_model_refuses_and_reads_the_same_values(plain: type[Plain],
                                                                            model: type[BaseModel]) -> None:
    seen = {"accepted": 0, "model": 0}
    for _, raw in _cases():
        seen[_check(plain, model, raw)] += 1
    assert seen["accepted"] >= 40 and seen["model"] >= 40, seen  # both kinds, many of each


@pytest.mark.parametrize(("plain", "model"), PAIRS, ids=IDS)
def test_clients_bodies_are_plain(plain: type[Plain], model: type[BaseModel]) -> None:
    """The bodies most requests are take msgspec's path (the OpenAI SDK's own fields are passed through there
    too); the native endpoint refuses unknown fields, so a body with the SDK's extras is the model's to word."""
    for body in CLIENT_BODIES:
        extras = {"user", "seed", "metadata", "stream", "stream_options"} & set(body)
        expect = "model" if plain is PlainNativeChat and extras else "accepted"
        assert _check(plain, model, body) == expect, body


_scalar = st.one_of(
    st.none(), st.booleans(), st.sampled_from([0, 1, 2, 16, 32, 256, 10_000_000, 10_000_001, -1, 86400, 86401]),
    st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.0, -0.0, 2.0, 2.0000001]),
    st.text(max_size=40), st.sampled_from(["low", "a_b", "Low", "", "none", "auto", "text", "true", "1"]),
)
_value = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=18), st.dictionaries(st.sampled_from(["include_usage", "type", "x", "name"]), inner,
                                                  max_size=3)), max_leaves=20)
_message = st.dictionaries(
    st.sampled_from(["role", "content", "name", "tool_call_id", "tool_calls", "x"]),
    st.one_of(st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "bot"]), _value),
    max_size=4,
) | st.fixed_dictionaries({"role": st.sampled_from(["system", "developer", "user", "assistant"]),
                           "content": st.text(max_size=20)},
                          optional={"name": st.one_of(st.none(), st.text(max_size=300), _scalar)})
_body = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(_message, max_size=3), _value)},
    optional={name: st.one_of(st.sampled_from([v for v in values if not (isinstance(v, str) and len(v) > 1000)]),
                              _value) for name, values in FIELD_VALUES},
)


@pytest.mark.parametrize(("plain", "model"), PAIRS, ids=IDS)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_body)
def test_generated_bodies_read_the_same_either_way(plain: type[Plain], model: type[BaseModel],
                                                  raw: dict[str, Any]) -> None:
    _check(plain, model, raw)
