%% The ORDER machine of tests/node/test_gen_statem.py, in Erlang.
-module(beh_order).
-behaviour(gen_statem).
-export([callback_mode/0, init/1, a/3, b/3]).

callback_mode() -> [state_functions, state_enter].

init(_) -> {ok, a, []}.

a(enter, Old, L) -> {keep_state, L ++ [{enter, a, Old}]};
a(cast, t0, _L) -> {keep_state_and_data, [{timeout, 0, zero}]};
a(timeout, C, L) -> {keep_state, L ++ [{evtimeout, C}]};
a(cast, pp, L) -> {keep_state, L ++ [{a_postpone, pp}], [postpone]};
a(cast, go, L) ->
    {next_state, b, L ++ [{a_go}], [{next_event, internal, ne1}, {next_event, internal, ne2}]};
a(cast, X, L) -> {keep_state, L ++ [{a_cast, X}]};
a(info, X, L) -> {keep_state, L ++ [{a_info, X}]}.

b(enter, Old, L) ->
    {keep_state, L ++ [{enter, b, Old}], [{state_timeout, 0, st0}, {{timeout, g}, 0, g0}]};
b(internal, X, L) -> {keep_state, L ++ [{b_internal, X}]};
b(state_timeout, X, L) -> {keep_state, L ++ [{b_state_timeout, X}]};
b({timeout, N}, X, L) -> {keep_state, L ++ [{b_gen_timeout, N, X}]};
b(cast, X, L) -> {keep_state, L ++ [{b_cast, X}]}.
