"""Helpers the tests share: starting real components (registries, HAProxy, the ECS emulator) on
loopback, finding free ports, building images. Fixture modules live in tests/fixtures_*.py and are
registered in tests/conftest.py."""
