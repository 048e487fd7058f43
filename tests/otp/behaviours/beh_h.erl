%% The handler H of tests/node/test_gen_event.py, in Erlang (the log in ets table beh_log).
-module(beh_h).
-export([init/1, handle_event/2, handle_call/2, handle_info/2, terminate/2]).

log(X) -> ets:insert(beh_log, {erlang:unique_integer([monotonic]), X}).

init(bad) -> {error, nope};
init(crash) -> erlang:error(boom);
init(A) -> {ok, A}.

handle_event(badret, _S) -> weird;
handle_event(crash, _S) -> erlang:error(kaboom);
handle_event(rm, _S) -> remove_handler;
handle_event(swap, S) when S =:= mid -> {swap_handler, bye, S, {beh_h, new}, hi};
handle_event(E, S) -> log({event, S, E}), {ok, S}.

handle_call(get, S) -> {ok, S, S};
handle_call(rm, _S) -> {remove_handler, removed};
handle_call(_, S) -> {ok, '?', S}.

handle_info(I, S) -> log({info, S, I}), {ok, S}.

terminate(A, S) -> log({terminate, A, S}), {terminated, S}.
