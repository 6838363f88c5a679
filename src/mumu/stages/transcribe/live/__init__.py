"""Live speech: transcribe while the user speaks (LocalAgreement partials, VAD endpoints)."""
