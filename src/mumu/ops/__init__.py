"""Operator tools: dead letters and replays."""
