"""Benchmarks: offline engine throughput against a bytes floor and peers; online serving."""
