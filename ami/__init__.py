"""The AMI driver: Asterisk's manager interface (TCP 5038) to the queue domain and back.

* ``ami.link``: the session (:class:`ami.link.AmiLink`), its messages and errors.
* ``ami.translate``: AMI events to ``queues.events``.
* ``ami.control``: ``queues.control.QueueControl`` carried out with AMI actions.

Library: panoramisk 1.4, not pyst2's ``asterisk.manager``. pyst2's manager crashes on Python 3 at the
first ``ChanVariable`` header (``dict.has_key``), pairs responses with actions by their order instead of
their ActionID, shares a mutable default argument between calls of ``send_action``, and never reconnects.
panoramisk matches ActionIDs and collects event lists on asyncio; its gaps are filled in ``ami.link`` by
subclassing, not copying: it reconnects after a fixed delay, drops or resends the actions in flight when
the connection ends, has no timeout per action, loses headers whose empty value has no trailing space,
waits for messages that never come after "Added interface to queue" or "Originate successfully queued",
and leaves a refused login connected and silent.
"""
