"""Backbones (loading, tiny test models) and the one LightningModule every method trains through."""
