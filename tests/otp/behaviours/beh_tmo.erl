%% The TIMEOUTS machine of tests/node/test_gen_statem.py, in Erlang (times in ms).
-module(beh_tmo).
-behaviour(gen_statem).
-export([callback_mode/0, init/1, handle_event/4]).
-define(T, 30).

callback_mode() -> handle_event_function.

init(_) -> {ok, a, []}.

handle_event(cast, C, S, L) ->
    case acts(C) of
        none when C =:= chg -> {next_state, b, L};
        none when C =:= rep -> {repeat_state, L ++ [{rep}]};
        none -> {keep_state, L ++ [{cast, C, S}]};
        Acts -> {keep_state_and_data, Acts}
    end;
handle_event(T, C, S, L) -> {keep_state, L ++ [{T, C, S}]}.

acts(all3) -> [{{timeout, g}, ?T, g1}, {state_timeout, ?T, s1}, {timeout, ?T, e1}];
acts(ev) -> [{timeout, ?T, e}];
acts(zero_and_next) -> [{timeout, 0, zero}, {next_event, internal, x}];
acts(st0_ev0) -> [{state_timeout, 0, s}, {timeout, 0, e}];
acts(ev_then_inf) -> [{timeout, 0, e5}, {timeout, infinity, e6}];
acts(upd_idle) -> [{{timeout, g}, update, u}];
acts(upd_running) -> [{{timeout, g}, ?T, g4}, {{timeout, g}, update, u4}];
acts(gen_cancel) -> [{{timeout, g}, ?T, g9}, {{timeout, g}, cancel}];
acts(st_inf) -> [{state_timeout, ?T, s9}, {state_timeout, infinity, none}];
acts(_) -> none.
