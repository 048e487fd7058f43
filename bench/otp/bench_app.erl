%% Application callback for the release_handler benchmark: a simple_one_for_one supervisor
%% (bench_sup) with N bench_otp workers, N from the application env.
-module(bench_app).
-behaviour(application).
-export([start/2, stop/1]).

start(_Type, _Args) ->
    {ok, Sup} = supervisor:start_link({local, bench_sup}, bench_sup, []),
    {ok, N} = application:get_env(bench, workers),
    [{ok, _} = supervisor:start_child(Sup, [I]) || I <- lists:seq(1, N)],
    {ok, Sup}.

stop(_) -> ok.
