"""12345 citizen-service hotline: the composition root (CLI, building the services from the settings,
the worker, process supervision, migrations). It may import anything; nothing imports it.

The domain lives in ``ivr``, ``orders``, ``queues`` and ``virtual_numbers``; the drivers at the edge in
``agi_scripts`` (FastAGI), ``web`` (HTTP) and ``jobs`` (RQ); settings in ``config``; the storage base,
metrics registry and shared vocabulary in ``base``.
"""
