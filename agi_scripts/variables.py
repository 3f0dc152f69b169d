"""Channel variables the handlers hand back to the dialplan (asterisk/extensions.conf reads them)."""

HOTLINE_QUEUE = "HOTLINE_QUEUE"  # the Asterisk queue the caller goes to
HOTLINE_PRIORITY = "HOTLINE_PRIORITY"  # for QUEUE_PRIO: higher is answered first
HOTLINE_TICKET = "HOTLINE_TICKET"  # the ticket this call opened (digits only)
HOTLINE_LANG = "HOTLINE_LANG"  # "zh-CN" or "en"
CHANNEL_LANGUAGE = "CHANNEL(language)"  # Asterisk's own: which sounds/<lang>/ folder prompts come from
CHANNEL_LINKEDID = "CHANNEL(linkedid)"  # Asterisk's own: the id shared by all channels of one call
