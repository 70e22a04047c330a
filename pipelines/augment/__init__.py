"""`sparkcnn augment` and on-the-fly training augmentation: seeded, vectorised image operations."""
