"""The pieces of ``benchmarks/bench_daemon.py``, one job per module.

- :mod:`keyxbench.project`: what the benchmark takes from twisted_keyx, in
  one place (groups, message constants, the unframed splitter);
- :mod:`keyxbench.process`: starting a server process pinned to a core,
  waiting for its port, and reading its CPU time and memory from ``/proc``;
- :mod:`keyxbench.clients`: the load generator's client protocols, one per
  wire (DH framed, DH unframed, EKE, OPAQUE, TLS, and canned lines), built on
  Twisted's receivers and the project's own splitter;
- :mod:`keyxbench.load`: the load generator, a process of its own
  (``python -m keyxbench.load``), and :func:`keyxbench.load.drive`, which runs
  it and measures the server's CPU over exactly the measured window;
- :mod:`keyxbench.stall`: many connections held mid-handshake, and what the
  daemon's memory does meanwhile;
- :mod:`keyxbench.canned`: a server with replies made in advance (Twisted's
  own cost, the framework-only ceiling), Int32 DH or N lines each way;
- :mod:`keyxbench.floor`: the crypto of one handshake, timed in process,
  and the server's side of one EKE or OPAQUE login;
- :mod:`keyxbench.modes`: the table of what can be measured (one entry per
  mode: which server, which client).
- :mod:`keyxbench.inproc`: the server's side of DH handshakes in process,
  which ``benchmarks/bench_instructions.py`` counts under valgrind and
  ``benchmarks/bench_inproc.py`` times;
- :mod:`keyxbench.flat`: ours without its layers (our checks, transcript,
  session key and line in the naive server's shape), counted beside it.

The peers compared against are scripts of their own:
``benchmarks/peer_naive.py`` and ``benchmarks/peer_tls.py``.  Results and how
to read them: docs/benchmarks.rst.
"""
