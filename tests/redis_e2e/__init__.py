"""End to end: the Redis Streams broker loses no job under process kills, cut
connections and a redis-server restart (real processes, sockets and servers)."""
