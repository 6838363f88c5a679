"""The aiohttp gateway."""
