"""The watcher: claims runnable jobs and advances each job's machine one stage at a time.

Names follow the original: `watcher.py` (claim and dispatch), `fsm.py` (states and transitions),
`event.py` (what each stage does), `helper.py` (timeouts, idempotency, defaults).
"""
