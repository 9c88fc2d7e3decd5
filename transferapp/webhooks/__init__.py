"""Signed webhooks (#25): a project's URLs that receive its events, per the Standard Webhooks spec.

`events.emit(project, event, data)` records one delivery per subscribed webhook and hands it to the
worker once the transaction commits; the worker signs and sends it, with retries (delivery.py).
Sits low in the house (below library) so that every domain package can announce an event.
"""
