%% A one_for_one supervisor whose child's restart fails `Fails` times in a row, for
%% test_supervisor_vs_otp.py: prints one JSON line per case (attempts, exit reason).
-module(sup_retry).
-export([main/0, init/1, start_child/0, loop/0]).

main() ->
    ets:new(cnt, [named_table, public]),
    process_flag(trap_exit, true),
    [case_(I, F) || {I, F} <- [{2, 1}, {5, 2}, {2, 100}, {0, 1}]],
    halt().

case_(Intensity, Fails) ->
    ets:insert(cnt, [{attempts, 0}, {fails, 0}, {intensity, Intensity}]),
    {ok, Sup} = supervisor:start_link(?MODULE, []),
    [{c, Pid, _, _}] = supervisor:which_children(Sup),
    ets:insert(cnt, [{attempts, 0}, {fails, Fails}]),
    exit(Pid, crash),
    Outcome =
        receive
            {'EXIT', Sup, R} -> atom_to_list(R)
        after 500 ->
            [{c, P, _, _}] = supervisor:which_children(Sup),
            true = is_pid(P),
            unlink(Sup),
            exit(Sup, kill),
            "running"
        end,
    [{attempts, A}] = ets:lookup(cnt, attempts),
    io:format("{\"intensity\": ~p, \"fails\": ~p, \"attempts\": ~p, \"outcome\": \"~s\"}~n",
              [Intensity, Fails, A, Outcome]).

init([]) ->
    [{intensity, I}] = ets:lookup(cnt, intensity),
    {ok, {#{strategy => one_for_one, intensity => I, period => 60},
          [#{id => c, start => {?MODULE, start_child, []}}]}}.

start_child() ->
    ets:update_counter(cnt, attempts, 1),
    case ets:lookup(cnt, fails) of
        [{fails, N}] when N > 0 -> ets:insert(cnt, {fails, N - 1}), {error, not_yet};
        _ -> {ok, spawn_link(?MODULE, loop, [])}
    end.

loop() -> receive _ -> loop() end.
