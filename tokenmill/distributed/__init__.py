"""Several GPUs: tensor parallelism (one model split over ranks) and data parallelism (replicas)."""
