"""The proxy: an aiohttp app that spreads uploads over the pool's workers and hands them out for p2p.

Usage:
    python -m visionpool.proxy --port 8080        (or: visionpool proxy)
"""
