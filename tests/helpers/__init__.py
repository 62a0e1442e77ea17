"""Helpers shared by the tests: tiny checkpoints, a real server process, a stand-in for the model hub."""
