-module(bench_sup).
-behaviour(supervisor).
-export([init/1]).
init([]) -> bench_otp:sup_init().
