from config import load_settings
from queues.routing import QueueChoice, RoutingRules

RULES = RoutingRules.from_settings(load_settings(environ={}))


def test_mandarin_categories_have_their_own_queues():
    assert RULES.choose("zh-CN", "general", "normal", False) == QueueChoice("hotline-zh", 1)
    assert RULES.choose("zh-CN", "traffic", "normal", False) == QueueChoice("traffic-zh", 1)
    assert RULES.choose("zh-CN", "urgent", "high", False) == QueueChoice("urgent-zh", 10)


def test_english_callers_share_one_queue_and_urgency_still_counts():
    assert RULES.choose("en", "traffic", "normal", False) == QueueChoice("hotline-en", 1)
    assert RULES.choose("en", "urgent", "high", False) == QueueChoice("hotline-en", 10)


def test_a_recent_caller_gets_a_small_boost_that_never_beats_urgency():
    assert RULES.choose("zh-CN", "general", "normal", True).priority == 2
    assert RULES.choose("zh-CN", "general", "normal", True).priority < RULES.choose("zh-CN", "urgent", "high", False).priority


def test_unknown_language_or_category_falls_back_to_a_real_queue():
    assert RULES.choose("fr", "general", "normal", False).queue == "hotline-zh"
    assert RULES.choose("zh-CN", "noise", "normal", False).queue == "hotline-zh"
    assert RULES.choose("zh-CN", None, "normal", False).queue == "hotline-zh"
    assert RULES.queues() == {"hotline-zh", "urgent-zh", "traffic-zh", "hotline-en"}
