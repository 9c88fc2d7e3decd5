"""Predictions: the web page, heat maps, batches, the REST API, export bundles."""
