%% Runs the scenarios of tests/otp/test_behaviours_vs_otp.py; one JSON line per scenario.
-module(beh_driver).
-export([main/0]).

main() ->
    logger:set_primary_config(level, none),  % handler crash reports would go to stdout
    out(order, order()),
    [out(C, tmo(C)) || C <- [ev, all3_rep, all3_chg, zero_and_next, st0_ev0, ev_then_inf,
                             upd_idle, upd_running, gen_cancel, st_inf]],
    out(handlers, handlers()),
    out(swaps, swaps()),
    out(sups, sups()),
    halt(0).

order() ->
    {ok, P} = gen_statem:start(beh_order, [], []),
    sys:suspend(P),
    gen_statem:cast(P, t0), gen_statem:cast(P, m1), P ! i1,
    sys:resume(P),
    timer:sleep(50),
    sys:suspend(P),
    [gen_statem:cast(P, M) || M <- [pp, go, after1]],
    sys:resume(P),
    timer:sleep(50),
    sys:get_state(P).

tmo(Case) ->
    Casts = case Case of all3_rep -> [all3, rep]; all3_chg -> [all3, chg]; _ -> [Case] end,
    {ok, P} = gen_statem:start(beh_tmo, [], []),
    [gen_statem:cast(P, C) || C <- Casts],
    timer:sleep(100),
    {_, Log} = sys:get_state(P),
    Log.

handlers() ->
    ets:new(beh_log, [named_table, public, ordered_set]),
    {ok, M} = gen_event:start(),
    Adds = [gen_event:add_handler(M, {beh_h, 1}, one),
            gen_event:add_handler(M, {beh_h, 2}, two),
            gen_event:add_handler(M, beh_h, plain),
            gen_event:add_handler(M, beh_h, plain2),
            gen_event:add_handler(M, {beh_h, 3}, bad)],
    Which = gen_event:which_handlers(M),
    State = sys:get_state(M),
    gen_event:sync_notify(M, hello),
    M ! inf,
    gen_event:sync_notify(M, badret),
    After = gen_event:which_handlers(M),
    Del = gen_event:delete_handler(M, nothere, x),
    Call = gen_event:call(M, nothere, q),
    Log = [X || {_, X} <- ets:tab2list(beh_log)],
    ets:delete(beh_log),
    {Adds, Which, State, Log, After, Del, Call}.

swaps() ->
    ets:new(beh_log, [named_table, public, ordered_set]),
    {ok, M} = gen_event:start(),
    gen_event:add_handler(M, {beh_h, 1}, first),
    gen_event:add_handler(M, {beh_h, 2}, mid),
    gen_event:add_handler(M, {beh_h, 3}, last),
    gen_event:sync_notify(M, swap),
    S1 = sys:get_state(M),
    R = gen_event:swap_handler(M, {{beh_h, 1}, x}, {{beh_h, 9}, y}),
    S2 = sys:get_state(M),
    R2 = gen_event:swap_handler(M, {nothere, a1}, {{beh_h, 7}, a2}),
    S3 = sys:get_state(M),
    ets:delete(beh_log),
    {S1, R, S2, R2, S3}.

sups() ->
    ets:new(beh_log, [named_table, public, ordered_set]),
    Self = self(),
    {ok, M} = gen_event:start(),
    ok = gen_event:add_sup_handler(M, {beh_h, 1}, one),
    ok = gen_event:add_sup_handler(M, {beh_h, 2}, two),
    ok = gen_event:add_sup_handler(M, {beh_h, 3}, three),
    D = gen_event:delete_handler(M, {beh_h, 1}, x),
    gen_event:sync_notify(M, badret),
    ok = gen_event:add_sup_handler(M, {beh_h, 4}, four),
    ok = gen_event:add_handler(M, {beh_h, 5}, five),
    gen_event:sync_notify(M, rm),
    ok = gen_event:add_sup_handler(M, {beh_h, 6}, six),
    S1 = gen_event:swap_handler(M, {{beh_h, 6}, a}, {{beh_h, 7}, b}),
    S2 = gen_event:swap_sup_handler(M, {{beh_h, 7}, a}, {{beh_h, 8}, c}),
    P = spawn(fun() ->
        ok = gen_event:add_sup_handler(M, {beh_h, 9}, nine),
        Self ! added,
        receive die -> exit(bye) end
    end),
    receive added -> ok end,
    P ! die,
    timer:sleep(50),
    W = gen_event:which_handlers(M),
    gen_event:stop(M),
    Msgs = flush([]),
    Log = [X || {_, X} <- ets:tab2list(beh_log)],
    ets:delete(beh_log),
    {D, S1, S2, W, Msgs, Log}.

flush(Acc) ->
    receive M -> flush([M | Acc]) after 50 -> lists:reverse(Acc) end.

out(Id, Term) ->
    io:put_chars([<<"{\"id\":">>, json(Id), <<",\"result\":">>, json(Term), <<"}\n">>]).

json(true) -> <<"true">>;
json(false) -> <<"null">>;   % OTP's "no id" is None on our side
json(A) when is_atom(A) -> [$", atom_to_list(A), $"];
json(I) when is_integer(I) -> integer_to_list(I);
json(P) when is_pid(P) -> <<"\"PID\"">>;  % pids differ between the two runs
json(T) when is_tuple(T) -> [<<"{\"t\":[">>, join([json(E) || E <- tuple_to_list(T)]), <<"]}">>];
json(L) when is_list(L) -> [$[, join([json(E) || E <- L]), $]].

join([]) -> [];
join([H | T]) -> [H | [[$, | X] || X <- T]].
