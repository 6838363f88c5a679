"""LocalAgreement without a model: what two hypotheses agree on is committed, never taken
back, and the last hypothesis of an utterance completes it."""

from __future__ import annotations

from mumu.stages.transcribe.live.agreement import LocalAgreement, TimedWord, text_of


def hyp(text: str, start: float = 0.0, step: float = 0.4) -> list[TimedWord]:
    return [TimedWord(f" {w}", start + i * step, start + i * step + 0.3)
            for i, w in enumerate(text.split())]


def test_the_prefix_two_hypotheses_agree_on_is_committed_and_the_rest_is_tentative() -> None:
    la = LocalAgreement.start()
    assert la.update(hyp("the quick")) == ([], hyp("the quick"))  # nothing to agree with yet
    newly, tentative = la.update(hyp("the quick brown fax"))
    assert text_of(newly) == "the quick"
    assert text_of(tentative) == "brown fax"
    newly, tentative = la.update(hyp("the quick brown fox jumps"))
    assert text_of(newly) == "brown"  # "fax" became "fox": not agreed, not committed
    assert text_of(la.committed) == "the quick brown"
    assert text_of(tentative) == "fox jumps"


def test_committed_words_are_never_taken_back_even_when_the_model_rephrases_them() -> None:
    la = LocalAgreement.start()
    la.update(hyp("please send the"))
    la.update(hyp("please send the report"))
    assert text_of(la.committed) == "please send the"
    # the model now hears "please sent a report": committed text stays, only what comes
    # after the committed end in time is compared
    la.update(hyp("please sent a report to", step=0.4))
    assert text_of(la.committed).startswith("please send the")
    la.finish(hyp("please sent a report to finance"))
    assert text_of(la.committed).startswith("please send the")
    assert text_of(la.committed).endswith("to finance")


def test_punctuation_and_case_do_not_stop_an_agreement() -> None:
    la = LocalAgreement.start()
    la.update(hyp("Paris, is"))
    newly, _ = la.update(hyp("paris is the capital"))
    assert text_of(newly) == "paris is"  # in the newest hypothesis's spelling
