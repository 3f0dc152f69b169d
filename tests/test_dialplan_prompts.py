"""Every hotline/ sound the Asterisk configuration plays is a prompt the menus render."""

import re
from pathlib import Path

import pytest

from ivr.errors import MenuError
from ivr.menu import load_menu

ASTERISK = Path(__file__).resolve().parents[1] / "asterisk"


def _sounds_in_config() -> set[str]:
    text = (ASTERISK / "extensions.conf").read_text() + (ASTERISK / "queues.conf").read_text()
    return set(re.findall(r"hotline/([a-z0-9][a-z0-9_-]*)", "\n".join(
        line.split(";", 1)[0] for line in text.splitlines())))


@pytest.mark.parametrize("menu", ["default", "no-menu"])
def test_dialplan_sounds_are_menu_prompts(menu):
    sounds = _sounds_in_config()
    assert {"queue-hold", "all-busy", "ticket-number"} <= sounds
    assert sounds <= set(load_menu(menu).prompt_ids())


def test_an_unknown_dialplan_prompt_is_refused(tmp_path):
    text = (Path(__file__).resolve().parents[1] / "ivr" / "menus" / "no-menu.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("dialplan_prompts: [queue-hold,", "dialplan_prompts: [no-such-prompt, queue-hold,"))
    with pytest.raises(MenuError, match="no-such-prompt"):
        load_menu(str(bad))
