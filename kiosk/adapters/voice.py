"""The automat's voice: espeak-ng, the distribution's offline speech synthesiser, run as a
command (it plays through the system's audio output, or writes a WAV file).

`say` never waits: it hands the text to the voice's own thread, which stops whatever is still
being said (the newest prompt is the one that matters) and speaks. Neither the engine nor the
screen's frame ever waits for speech. A missing espeak-ng, or no audio output, costs the
spoken prompts (logged once), never the automat.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from pathlib import Path

log = logging.getLogger(__name__)

#: the screen's language -> espeak-ng's voice
VOICES = {"de": "de", "en": "en-gb", "fr": "fr-fr", "nl": "nl"}
#: words per minute: a little slower than espeak-ng's 175, for listeners who are not young
RATE = 150
COMMAND = "espeak-ng"


class NoVoice(RuntimeError):
    """espeak-ng is not installed (the README's command installs it)."""


def command_line(text: str, lang: str, wav: Path | None = None) -> list[str]:
    if lang not in VOICES:
        raise ValueError(f"no voice for language {lang!r}")
    found = shutil.which(COMMAND)
    if found is None:
        raise NoVoice(f"{COMMAND} is not installed: no spoken prompts")
    args = [found, "-v", VOICES[lang], "-s", str(RATE)]
    if wav is not None:
        args += ["-w", str(wav)]
    return [*args, "--", text]


def record(text: str, lang: str, wav: Path) -> Path:
    """Speak `text` into the WAV file `wav` (waits; for the headless run and tests)."""
    subprocess.run(command_line(text, lang, wav), check=True, capture_output=True, timeout=30)
    return wav


class Voice:
    """Speaks on its own thread; a new text cuts off the one being spoken."""

    def __init__(self, command: list[str] | None = None) -> None:
        """`command`: a program run instead of espeak-ng, with the text as its last argument
        (tests use one that is slow, to show that nothing waits for it)."""
        self._command = command
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._next: tuple[str, str] | None = None
        self._speaking: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._failed = False
        self.spoken = 0  # texts handed to the synthesiser (for the service screen and tests)
        self._thread = threading.Thread(target=self._run, name="voice", daemon=True)
        self._thread.start()

    def say(self, text: str, lang: str) -> None:
        """Speak `text` in `lang` as soon as possible; returns at once."""
        with self._lock:
            self._next = (text, lang)
            if self._speaking is not None and self._speaking.poll() is None:
                self._speaking.terminate()  # the newer prompt is the one that matters
            self._wake.notify()

    def stop(self) -> None:
        """Stop speaking (speech turned off, the session ended)."""
        with self._lock:
            self._next = None
            if self._speaking is not None and self._speaking.poll() is None:
                self._speaking.terminate()

    def close(self) -> None:
        self.stop()
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._closed:
            try:
                self._speak_next()
            except Exception:  # the voice outlives any one prompt (nothing waits for it)
                log.exception("the voice failed on a prompt")

    def _speak_next(self) -> None:
        """Wait for a text, start speaking it, and wait while it is said."""
        with self._lock:
            while self._next is None and not self._closed:
                self._wake.wait()
            if self._closed:
                return
            assert self._next is not None
            (text, lang), self._next = self._next, None
            try:
                args = (
                    [*self._command, text]
                    if self._command is not None
                    else command_line(text, lang)
                )
                self._speaking = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
                self.spoken += 1
            except (OSError, subprocess.SubprocessError, NoVoice, ValueError) as e:
                self._speaking = None
                if not self._failed:  # once: the automat works on without its voice
                    log.warning("no spoken prompts: %s", e)
                    self._failed = True
                return
            speaking = self._speaking
        speaking.wait()
