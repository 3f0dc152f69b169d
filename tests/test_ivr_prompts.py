"""Prompt sound files: naming, the manifest that protects recordings, and real espeak-ng + sox renders."""

from __future__ import annotations

import json
import os
import shutil
import wave
from pathlib import Path

import pytest
import yaml

from base.vocabulary import Language
from ivr.errors import PromptError
from ivr.menu import load_menu
from ivr.prompts import (
    ASTERISK_LANGUAGES,
    ESPEAK_VOICES,
    MANIFEST_NAME,
    PromptNameError,
    PromptRenderError,
    ToolMissingError,
    asterisk_language,
    render_prompts,
    sound_name,
    sound_path,
    wav_format,
)

HAVE_TOOLS = shutil.which("espeak-ng") is not None and shutil.which("sox") is not None
# CI installs both (.ci/run), so there a missing tool is a failure, not a skip.
needs_tools = pytest.mark.skipif(not HAVE_TOOLS and not os.environ.get("CI"),
                                 reason="espeak-ng and sox not installed (apt-get install espeak-ng sox)")


def small_menu(tmp_path: Path, welcome_en: str = "Welcome.") -> object:
    data = {
        "start": "welcome",
        "fallback": "agent",
        "nodes": {
            "welcome": {"type": "announcement", "prompt": "welcome", "next": "agent"},
            "agent": {"type": "route", "category": "general", "prompt": "connecting"},
        },
        "prompts": {
            "welcome": {"zh-CN": "您好。", "en": welcome_en},
            "connecting": {"zh-CN": "请稍候。", "en": "Please hold."},
        },
    }
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load_menu(str(path))


class FakeTts:
    """Writes a tiny valid WAV whose samples spell the text, and remembers what it was asked."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[tuple[str, str]] = []
        self.fail_on = fail_on

    def __call__(self, text: str, language: str, wav_path: Path) -> None:
        if text == self.fail_on:
            raise PromptRenderError("synthetic failure")
        self.calls.append((text, language))
        with wave.open(str(wav_path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(8000)
            wav.writeframes(text.encode("utf-8").ljust(2 * ((len(text.encode()) + 1) // 2), b"\0"))


# --- names -------------------------------------------------------------------------------------------


def test_asterisk_languages_and_sound_names():
    assert asterisk_language("zh-CN") == "zh"
    assert asterisk_language("en") == "en"
    assert sound_name("main-menu") == "hotline/main-menu"
    assert sound_path(Path("/s"), "zh-CN", "goodbye") == Path("/s/zh/hotline/goodbye.wav")


@pytest.mark.parametrize("bad", ["fr", "zh", None])
def test_unknown_language_is_a_typed_error(bad):
    with pytest.raises(PromptNameError, match="no Asterisk language"):
        asterisk_language(bad)


@pytest.mark.parametrize("bad", ["../etc/passwd", "Main Menu", "", "a/b"])
def test_sound_name_refuses_what_is_not_a_prompt_id(bad):
    with pytest.raises(PromptNameError):
        sound_name(bad)


# --- the manifest: what is ours, what is a recording -------------------------------------------------


def test_renders_every_prompt_in_every_language_with_a_manifest(tmp_path):
    tts = FakeTts()
    written = render_prompts(small_menu(tmp_path), tmp_path / "sounds", tts=tts)
    sounds = tmp_path / "sounds"
    assert sorted(p.relative_to(sounds).as_posix() for p in written) == [
        "en/hotline/connecting.wav", "en/hotline/welcome.wav", "zh/hotline/connecting.wav", "zh/hotline/welcome.wav"
    ]
    assert ("您好。", "zh-CN") in tts.calls and ("Welcome.", "en") in tts.calls
    manifest = json.loads((sounds / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert set(manifest["files"]) == {p.relative_to(sounds).as_posix() for p in written}
    assert not list(sounds.rglob("*.partial"))


def test_second_run_writes_nothing(tmp_path):
    menu = small_menu(tmp_path)
    render_prompts(menu, tmp_path / "s", tts=FakeTts())
    tts = FakeTts()
    assert render_prompts(menu, tmp_path / "s", tts=tts) == []
    assert tts.calls == []


def test_changed_text_rerenders_only_that_file(tmp_path):
    render_prompts(small_menu(tmp_path), tmp_path / "s", tts=FakeTts())
    written = render_prompts(small_menu(tmp_path, welcome_en="Hello again."), tmp_path / "s", tts=FakeTts())
    assert written == [tmp_path / "s" / "en" / "hotline" / "welcome.wav"]


def test_a_recording_dropped_in_first_is_never_overwritten(tmp_path):
    recording = tmp_path / "s" / "en" / "hotline" / "welcome.wav"
    recording.parent.mkdir(parents=True)
    recording.write_bytes(b"RIFF recorded by a person")
    written = render_prompts(small_menu(tmp_path), tmp_path / "s", tts=FakeTts())
    assert recording not in written and len(written) == 3
    assert recording.read_bytes() == b"RIFF recorded by a person"
    render_prompts(small_menu(tmp_path, welcome_en="Changed."), tmp_path / "s", tts=FakeTts())
    assert recording.read_bytes() == b"RIFF recorded by a person"


def test_a_recording_put_over_our_file_is_kept_even_when_the_text_changes(tmp_path):
    render_prompts(small_menu(tmp_path), tmp_path / "s", tts=FakeTts())
    ours = tmp_path / "s" / "zh" / "hotline" / "welcome.wav"
    ours.write_bytes(b"RIFF a studio recording")
    assert render_prompts(small_menu(tmp_path, welcome_en="Changed."), tmp_path / "s", tts=FakeTts()) == [
        tmp_path / "s" / "en" / "hotline" / "welcome.wav"
    ]
    assert ours.read_bytes() == b"RIFF a studio recording"
    manifest = json.loads((tmp_path / "s" / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert "zh/hotline/welcome.wav" not in manifest["files"]


def test_force_rerenders_everything_recordings_included(tmp_path):
    menu = small_menu(tmp_path)
    render_prompts(menu, tmp_path / "s", tts=FakeTts())
    recording = tmp_path / "s" / "zh" / "hotline" / "welcome.wav"
    recording.write_bytes(b"RIFF recorded")
    written = render_prompts(menu, tmp_path / "s", force=True, tts=FakeTts())
    assert len(written) == 4
    assert wav_format(recording) == (8000, 1, 2)


def test_a_deleted_file_is_rendered_again(tmp_path):
    menu = small_menu(tmp_path)
    render_prompts(menu, tmp_path / "s", tts=FakeTts())
    gone = tmp_path / "s" / "en" / "hotline" / "connecting.wav"
    gone.unlink()
    assert render_prompts(menu, tmp_path / "s", tts=FakeTts()) == [gone]


def test_files_rendered_before_a_failure_stay_ours(tmp_path):
    menu = small_menu(tmp_path)
    with pytest.raises(PromptRenderError, match="synthetic failure"):
        render_prompts(menu, tmp_path / "s", tts=FakeTts(fail_on="请稍候。"))
    manifest = json.loads((tmp_path / "s" / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert set(manifest["files"]) == {"zh/hotline/welcome.wav", "en/hotline/welcome.wav"}
    assert not list((tmp_path / "s").rglob("*.partial"))
    # A text change now still reaches the files written before the failure.
    written = render_prompts(small_menu(tmp_path, welcome_en="New."), tmp_path / "s", tts=FakeTts())
    assert tmp_path / "s" / "en" / "hotline" / "welcome.wav" in written


def test_a_tts_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(PromptRenderError, match="wrote no file"):
        render_prompts(small_menu(tmp_path), tmp_path / "s", tts=lambda text, language, path: None)


def test_a_broken_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(PromptRenderError, match="not a readable prompt manifest"):
        render_prompts(small_menu(tmp_path), tmp_path / "s", tts=FakeTts())


def test_missing_tools_say_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ToolMissingError, match="apt-get install espeak-ng sox") as caught:
        render_prompts(small_menu(tmp_path), tmp_path / "s")
    assert isinstance(caught.value, PromptError)
    assert not list((tmp_path / "s").rglob("*.wav"))


# --- real renders ------------------------------------------------------------------------------------


@needs_tools
def test_espeak_and_sox_render_8khz_mono_16bit_wavs(tmp_path):
    written = render_prompts(load_menu("no-menu"), tmp_path / "sounds")
    assert len(written) == 2 * len(load_menu("no-menu").prompt_ids())
    for path in written:
        with wave.open(str(path), "rb") as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
            assert wav.getnframes() > 8000 // 2  # more than half a second of speech
    assert render_prompts(load_menu("no-menu"), tmp_path / "sounds") == []


@needs_tools
def test_a_text_starting_with_a_dash_is_spoken_not_taken_for_an_option(tmp_path):
    written = render_prompts(small_menu(tmp_path, welcome_en="-v zz --help"), tmp_path / "s")
    assert wav_format(tmp_path / "s" / "en" / "hotline" / "welcome.wav") == (8000, 1, 2)
    assert len(written) == 4


def test_every_language_has_a_sound_folder_and_a_voice():
    assert set(ASTERISK_LANGUAGES) == set(ESPEAK_VOICES) == {language.value for language in Language}
