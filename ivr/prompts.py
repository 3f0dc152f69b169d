"""Prompt sound files: render a menu's prompt texts into 8 kHz WAV files that Asterisk plays.

Files go to ``<sounds_dir>/<asterisk language>/hotline/<prompt id>.wav`` (e.g. ``zh/hotline/main-menu.wav``);
the driver plays them by ``sound_name(prompt_id)`` after setting the channel language to
``asterisk_language(language)``.

Operators may drop RECORDED files in place of the synthetic ones. A manifest
(``<sounds_dir>/hotline-prompts.json``) keeps, for each file we rendered, a hash of its text and of
the file itself. A file is re-rendered only if it is missing, or it is ours (in the manifest, file
unchanged) and its text changed, or ``force=True``. Anything else is a recording and is left alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import wave
from collections.abc import Callable
from pathlib import Path

from base.vocabulary import Language
from ivr.errors import PromptError, PromptNameError, PromptRenderError, ToolMissingError
from ivr.menu import PROMPT_ID, Menu

__all__ = [
    "ASTERISK_LANGUAGES",
    "EspeakTts",
    "MANIFEST_NAME",
    "PromptError",
    "PromptNameError",
    "PromptRenderError",
    "SAMPLE_RATE",
    "SOUND_FOLDER",
    "ToolMissingError",
    "Tts",
    "asterisk_language",
    "render_prompts",
    "sound_name",
    "sound_path",
]

#: Menu language -> the language folder Asterisk looks in (CHANNEL(language)).
ASTERISK_LANGUAGES = {Language.zh_CN.value: "zh", Language.en.value: "en"}
#: Menu language -> espeak-ng voice.
ESPEAK_VOICES = {Language.zh_CN.value: "cmn", Language.en.value: "en"}
SOUND_FOLDER = "hotline"
MANIFEST_NAME = "hotline-prompts.json"
SAMPLE_RATE = 8000
INSTALL_HINT = "apt-get install espeak-ng sox"

#: A text-to-speech function: (text, menu language, path of the WAV file to write) -> None.
Tts = Callable[[str, str, Path], None]


def asterisk_language(language: str) -> str:
    """The Asterisk language (sound folder) for a menu language: "zh-CN" -> "zh", "en" -> "en"."""
    try:
        return ASTERISK_LANGUAGES[language]
    except (KeyError, TypeError):
        raise PromptNameError(
            f"no Asterisk language for {language!r} (known: {', '.join(ASTERISK_LANGUAGES)})"
        ) from None


def sound_name(prompt_id: str) -> str:
    """What the driver passes to STREAM FILE / GET DATA: "hotline/<prompt id>" (no extension)."""
    if not isinstance(prompt_id, str) or not PROMPT_ID.match(prompt_id):
        raise PromptNameError(f"{prompt_id!r} is not a prompt id (lowercase letters, digits, '-' or '_')")
    return f"{SOUND_FOLDER}/{prompt_id}"


def sound_path(sounds_dir: Path, language: str, prompt_id: str) -> Path:
    """Where the WAV file of a prompt in a language lives under the sounds folder."""
    return Path(sounds_dir) / asterisk_language(language) / f"{sound_name(prompt_id)}.wav"


class EspeakTts:
    """Text to speech with espeak-ng, resampled by sox to 8 kHz mono 16-bit WAV (telephone quality)."""

    def __init__(self, timeout_s: float = 60.0):
        self.timeout_s = timeout_s

    @staticmethod
    def check_tools() -> None:
        missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
        if missing:
            raise ToolMissingError(
                f"{' and '.join(missing)} not found: prompts are rendered with espeak-ng and sox; "
                f"install them with `{INSTALL_HINT}`"
            )

    def __call__(self, text: str, language: str, wav_path: Path) -> None:
        self.check_tools()
        voice = ESPEAK_VOICES.get(language)
        if voice is None:
            raise PromptNameError(f"no espeak-ng voice for {language!r} (known: {', '.join(ESPEAK_VOICES)})")
        # -b 1: the text is UTF-8; --stdin: a text starting with '-' is no option.
        speech = self._run(["espeak-ng", "-v", voice, "-b", "1", "--stdin", "--stdout"], text.encode("utf-8"))
        if not speech.stdout:
            raise PromptRenderError(f"espeak-ng produced no sound for {text[:40]!r}")
        self._run(
            ["sox", "-V1", "-t", "wav", "-", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16",
             "-e", "signed-integer", "-t", "wav", str(wav_path), "gain", "-n", "-3"],
            speech.stdout,
        )

    def _run(self, command: list[str], data: bytes) -> subprocess.CompletedProcess:
        try:
            result = subprocess.run(command, input=data, capture_output=True, timeout=self.timeout_s, check=False)
        except FileNotFoundError:
            raise ToolMissingError(f"{command[0]} not found; install it with `{INSTALL_HINT}`") from None
        except subprocess.TimeoutExpired:
            raise PromptRenderError(f"{command[0]} took more than {self.timeout_s:g} s") from None
        if result.returncode != 0:
            detail = result.stderr.decode("utf-8", "replace").strip()[-300:]
            raise PromptRenderError(f"{command[0]} failed (exit {result.returncode}): {detail}")
        return result


def render_prompts(menu: Menu, sounds_dir: Path, force: bool = False, tts: Tts | None = None) -> list[Path]:
    """Render every prompt of the menu in every language; return the files written by this run.

    Up-to-date files and recordings are skipped (see the module docstring); ``force`` re-renders all.
    ``tts`` replaces espeak-ng + sox (it must write an 8 kHz mono 16-bit WAV file).
    """
    sounds_dir = Path(sounds_dir)
    manifest_path = sounds_dir / MANIFEST_NAME
    ours = _read_manifest(manifest_path)
    speak = tts or EspeakTts()
    written: list[Path] = []
    changed = False
    try:
        for prompt_id in menu.prompt_ids():
            for language in menu.languages:
                path = sound_path(sounds_dir, language, prompt_id)
                key = path.relative_to(sounds_dir).as_posix()
                text = menu.prompt_text(prompt_id, language)
                text_hash = _sha256(f"{language}\n{text}".encode("utf-8"))
                entry = ours.get(key)
                if path.exists() and not force:
                    if entry is None or entry.get("sound") != _file_hash(path):
                        if ours.pop(key, None) is not None:  # our file was replaced by a recording
                            changed = True
                        continue
                    if entry.get("text") == text_hash:
                        continue
                _render_one(speak, text, language, path)
                ours[key] = {"text": text_hash, "sound": _file_hash(path)}
                written.append(path)
                changed = True
    finally:
        # Also after a failure: files already rendered must stay known as ours, not turn into "recordings".
        if changed:
            _write_manifest(manifest_path, ours)
    return written


def _render_one(speak: Tts, text: str, language: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Render beside the target and rename: a half-written file would otherwise pass for a recording.
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        speak(text, language, partial)
        if not partial.is_file() or partial.stat().st_size == 0:
            raise PromptRenderError(f"{path}: the text-to-speech step wrote no file")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _read_manifest(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
            raise ValueError("'files' must map file -> hashes")
        return dict(files)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PromptRenderError(
            f"{path}: not a readable prompt manifest ({exc}); fix or delete it "
            "(without it, existing sound files count as recordings and are kept unless forced)"
        ) from None


def _write_manifest(path: Path, files: dict[str, dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps({"version": 1, "files": files}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_hash(path: Path) -> str:
    return _sha256(path.read_bytes())


def wav_format(path: Path) -> tuple[int, int, int]:
    """(sample rate, channels, bytes per sample) of a WAV file, to check what was rendered."""
    try:
        with wave.open(str(path), "rb") as wav:
            return wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
    except (OSError, wave.Error, EOFError) as exc:
        raise PromptRenderError(f"{path}: not a readable WAV file ({exc})") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m ivr.prompts --sounds-dir DIR [--menu NAME|PATH] [--force]``."""
    # Here, not at the top: ivr.menu imports this module for prompt names.
    from ivr.errors import MenuError
    from ivr.menu import load_menu

    parser = argparse.ArgumentParser(prog="python -m ivr.prompts", description=main.__doc__)
    parser.add_argument("--sounds-dir", type=Path, required=True, help="Asterisk sounds folder")
    parser.add_argument("--menu", default="default", help="bundled menu name or .yaml path")
    parser.add_argument("--force", action="store_true", help="re-render every file, recordings included")
    args = parser.parse_args(argv)
    try:
        written = render_prompts(load_menu(args.menu), args.sounds_dir, force=args.force)
    except (PromptError, MenuError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(written)} prompt files written under {args.sounds_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
