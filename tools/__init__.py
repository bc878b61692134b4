"""Tools that measure and attack a pool: ``visionpool bench`` (the engine's limits, the pool's throughput and
CPU cost), the load generator it runs on, and ``visionpool chaos``. Not the library: ``import
visionpool.client`` loads none of it.
"""
