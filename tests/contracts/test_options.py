"""Audio options are one model: the form, the websocket, the ingest headers, AudioReady
and the Whisper call all use ``AudioOptions`` without renaming a field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mumu.contracts import headers as h
from mumu.contracts.events import AudioReady, IngestAudioHeaders
from mumu.contracts.options import OPTION_HEADERS, AudioOptions
from mumu.gateway.client_messages import AudioEndMessage
from mumu.gateway.models import AudioAskForm
from mumu.stages.ingest.request import parse_headers
from mumu.stages.transcribe.engine import transcribe_kwargs

EVERY = AudioOptions(language="de", task="translate", prompt="Kathryn Nguyen",
                     word_timestamps=True, vad=True, beam_size=3, answer=False)
"""Every option away from its default."""


def test_every_option_differs_from_its_default_in_the_fixture() -> None:
    default = AudioOptions()
    assert all(getattr(EVERY, name) != getattr(default, name) for name in AudioOptions.model_fields)


def test_every_option_has_its_public_header() -> None:
    assert set(OPTION_HEADERS) == set(AudioOptions.model_fields)
    assert set(OPTION_HEADERS.values()) == {
        h.LANGUAGE, h.TASK, h.PROMPT, h.WORD_TIMESTAMPS, h.VAD, h.BEAM_SIZE, h.ANSWER}
    schema = IngestAudioHeaders.model_json_schema(by_alias=True)["properties"]
    assert set(OPTION_HEADERS.values()) <= set(schema)


def test_options_survive_the_trip_through_ingest_headers_unchanged() -> None:
    written = IngestAudioHeaders(
        content_type="audio/wav", session_id="s1", request_id="r1", **EVERY.model_dump()
    ).to_headers()
    assert written[h.PROMPT] == "Kathryn Nguyen"
    assert (written[h.VAD], written[h.ANSWER], written[h.BEAM_SIZE]) == ("true", "false", "3")
    # a producer's header names may come in any case
    read = parse_headers({k.lower(): v for k, v in written.items()})
    assert (read.content_type, read.session_id, read.request_id) == ("audio/wav", "s1", "r1")
    assert read.options() == EVERY
    ready = AudioReady(event_id="e", request_id="r1", workspace_id="w", session_id="s1",
                       object_name="o", duration=1.0, source_content_type="audio/wav",
                       options=read.options())
    assert AudioReady.model_validate_json(ready.model_dump_json()).options == EVERY


def test_the_form_and_the_websocket_message_are_the_same_options() -> None:
    fields = {k: str(v).lower() if isinstance(v, bool) else str(v)
              for k, v in EVERY.model_dump().items()}  # as a form sends them: strings
    assert AudioAskForm.model_validate({**fields, "audio": b"RIFF"}).options() == EVERY
    end = AudioEndMessage.model_validate({"type": "audio.end", "format": "wav",
                                          **EVERY.model_dump()})
    assert end.options() == EVERY


def test_the_whisper_arguments_come_from_every_transcription_option() -> None:
    assert transcribe_kwargs(EVERY) == {
        "language": "de", "task": "translate", "initial_prompt": "Kathryn Nguyen",
        "word_timestamps": True, "vad_filter": True, "beam_size": 3,
    }


def test_a_prompt_is_one_header_line_and_blank_means_unset() -> None:
    options = AudioOptions(prompt="  Kathryn\r\n  Nguyen\t", language="")
    assert (options.prompt, options.language) == ("Kathryn Nguyen", None)
    assert h.LANGUAGE not in options.to_headers()
    assert AudioOptions(prompt=" \n ").prompt is None


@pytest.mark.parametrize(("field", "value"), [
    ("language", "English"), ("task", "summarise"), ("beam_size", 0), ("beam_size", 21),
    ("prompt", "x" * 2001), ("vad", "perhaps"),
])
def test_bad_options_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as bad:
        AudioOptions.model_validate({field: value})
    assert bad.value.errors()[0]["loc"][0] == field


def test_an_audio_ready_written_before_the_rename_still_reads() -> None:
    earlier = ('{"event_id":"e","request_id":"r1","workspace_id":"w","session_id":"s1",'
               '"object_name":"o","duration":1.0,"source_content_type":"audio/wav",'
               '"options":{"language":"de","task":"translate","initial_prompt":"Kathryn Nguyen",'
               '"word_timestamps":true,"vad_filter":true,"beam_size":3,"answer":false}}')
    assert AudioReady.model_validate_json(earlier).options == EVERY
