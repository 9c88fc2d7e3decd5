"""Reading studies (#26): blind double reading, agreement between readers and with the model, adjudication."""
