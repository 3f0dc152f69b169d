"""12345 citizen-service hotline: the process-level glue (CLI, storage connections, web app, logging).

The domain lives in the design card's packages: ``ivr``, ``orders``, ``queues``,
``virtual_numbers``; the FastAGI server in ``agi_scripts``; settings in ``config``.
"""
