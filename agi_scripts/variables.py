"""Channel variables the handlers hand back to the dialplan (asterisk/extensions.conf reads them)."""

HOTLINE_QUEUE = "HOTLINE_QUEUE"  # the Asterisk queue the caller goes to
HOTLINE_PRIORITY = "HOTLINE_PRIORITY"  # for QUEUE_PRIO: higher is answered first
HOTLINE_TICKET = "HOTLINE_TICKET"  # the ticket this call opened (digits only)
HOTLINE_LANG = "HOTLINE_LANG"  # "zh-CN" or "en"
HOTLINE_AGENT_RESULT = "HOTLINE_AGENT_RESULT"  # a feature code's outcome: ok | unknown-agent | unavailable | refused | bad-reason
CHANNEL_LANGUAGE = "CHANNEL(language)"  # Asterisk's own: which sounds/<lang>/ folder prompts come from
CHANNEL_LINKEDID = "CHANNEL(linkedid)"  # Asterisk's own: the id shared by all channels of one call

# The virtual-number legs (agi://host/virtual, asterisk/extensions.conf [hotline-virtual]).
VIRTUAL_CALL = "VIRTUAL_CALL"  # the call id the outgoing leg dials (Local/<id>@hotline-virtual-out); set last
VIRTUAL_CALLERID = "VIRTUAL_CALLERID"  # the virtual number, presented to the callee as caller ID
VIRTUAL_RECORD = "VIRTUAL_RECORD"  # "1": announce and record the call
VIRTUAL_REFUSED = "VIRTUAL_REFUSED"  # why the call is not put through (the caller hears "not in service")
VIRTUAL_TARGET = "VIRTUAL_TARGET"  # on the outgoing leg only: the real number to dial
