"""Speed layer: live events in Redis streams since the batch watermark, handed to batch once."""
