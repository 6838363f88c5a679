"""The chat sent to the model: system prompt, remembered turns, the question.

The answer's language follows the question's (the transcript's detected language,
or the text ask's ``language``) through an instruction in the system prompt. The
remembered turns are dropped oldest first until the prompt fits the backend's
context with room for the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

from mumu.contracts.events import AnswerFinal
from mumu.stages.reason.backend import ChatMessage

LANGUAGE_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ar": "Arabic",
        "bg": "Bulgarian",
        "ca": "Catalan",
        "cs": "Czech",
        "da": "Danish",
        "de": "German",
        "el": "Greek",
        "en": "English",
        "es": "Spanish",
        "et": "Estonian",
        "fa": "Persian",
        "fi": "Finnish",
        "fr": "French",
        "he": "Hebrew",
        "hi": "Hindi",
        "hr": "Croatian",
        "hu": "Hungarian",
        "id": "Indonesian",
        "it": "Italian",
        "ja": "Japanese",
        "ko": "Korean",
        "lt": "Lithuanian",
        "lv": "Latvian",
        "ms": "Malay",
        "nl": "Dutch",
        "no": "Norwegian",
        "pl": "Polish",
        "pt": "Portuguese",
        "ro": "Romanian",
        "ru": "Russian",
        "sk": "Slovak",
        "sl": "Slovenian",
        "sr": "Serbian",
        "sv": "Swedish",
        "th": "Thai",
        "tr": "Turkish",
        "uk": "Ukrainian",
        "vi": "Vietnamese",
        "zh": "Chinese",
    }
)


class PromptTooLong(Exception):  # noqa: N818 - a condition, mapped to the error code too_long
    """The system prompt and the question alone do not fit the context."""


def language_instruction(language: str | None) -> str:
    if not language:
        return "Answer in the language of the question."
    code = language.strip().lower().split("-")[0].split("_")[0]
    name = LANGUAGE_NAMES.get(code, language)
    return f"The question is in {name}. Answer in {name}."


def system_message(system_prompt: str, language: str | None) -> ChatMessage:
    return ChatMessage("system", f"{system_prompt.strip()}\n{language_instruction(language)}")


def build_messages(
    *,
    system: ChatMessage,
    history: Sequence[AnswerFinal],
    question: str,
    count_tokens: Callable[[str], int],
    budget: int,
) -> tuple[list[ChatMessage], int]:
    """The chat and how many earlier turns it kept (newest first, until ``budget``)."""
    used = count_tokens(system.content) + count_tokens(question)
    if used > budget:
        raise PromptTooLong(
            f"the question takes about {used} tokens; the context leaves room for {budget}"
        )
    kept: list[ChatMessage] = []
    turns = 0
    for turn in reversed(history):
        if not turn.text.strip():
            continue  # a cancelled answer that never started
        cost = count_tokens(turn.question) + count_tokens(turn.text)
        if used + cost > budget:
            break
        kept[:0] = [ChatMessage("user", turn.question), ChatMessage("assistant", turn.text)]
        used += cost
        turns += 1
    return [system, *kept, ChatMessage("user", question)], turns
