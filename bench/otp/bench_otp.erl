%% The OTP side of the side-by-side benchmarks. Prints one JSON object per line.
%%   bench_otp:main(["calls", Seconds])    gen_server:call throughput, 1 and 2 clients
%%   bench_otp:main(["upgrade", N])        N gen_servers under simple_one_for_one upgraded by
%%                                         hand as release_handler does it: per process
%%                                         sys:suspend, load, sys:change_code, sys:resume
-module(bench_otp).
-behaviour(gen_server).
-export([main/1, init/1, handle_call/3, handle_cast/2, code_change/3, start_link/1,
         sup_init/0]).

start_link(I) -> gen_server:start_link(?MODULE, I, []).
init(I) -> {ok, #{id => I, n => 0}}.
handle_call(ping, _From, S) -> {reply, pong, S};
handle_call(incr, _From, S = #{n := N}) -> {reply, N + 1, S#{n := N + 1}}.
handle_cast(_, S) -> {noreply, S}.
code_change(_Old, S, _Extra) -> {ok, S#{history => []}}.

sup_init() ->
    {ok, {#{strategy => simple_one_for_one, intensity => 0, period => 1},
          [#{id => w, start => {?MODULE, start_link, []}, modules => [?MODULE]}]}}.

now_us() -> erlang:monotonic_time(microsecond).

json(Pairs) ->
    Fields = [io_lib:format("\"~s\":~s", [K, v(V)]) || {K, V} <- Pairs],
    io:put_chars(["{", lists:join(",", Fields), "}\n"]).
v(V) when is_integer(V) -> integer_to_list(V);
v(V) when is_float(V) -> float_to_list(V, [{decimals, 3}]);
v(V) when is_list(V) -> io_lib:format("\"~s\"", [V]);
v(V) when is_atom(V) -> io_lib:format("\"~s\"", [V]).

main(["calls", Secs0]) ->
    Secs = list_to_integer(Secs0),
    {ok, S} = gen_server:start(?MODULE, 0, []),
    [begin
         Parent = self(),
         Deadline = now_us() + Secs * 1000000,
         Ps = [spawn_link(fun() -> Parent ! {done, call_loop(S, Deadline, 0)} end)
               || _ <- lists:seq(1, Clients)],
         Total = lists:sum([receive {done, C} -> C end || _ <- Ps]),
         json([{"bench", "calls"}, {"side", "otp"}, {"clients", Clients},
               {"per_s", Total / Secs}])
     end || Clients <- [1, 2]],
    halt(0);
main(["upgrade", N0]) ->
    N = list_to_integer(N0),
    process_flag(trap_exit, true),
    {ok, Sup} = supervisor:start_link(bench_sup, []),
    Pids = [begin {ok, P} = supervisor:start_child(Sup, [I]), P end || I <- lists:seq(1, N)],
    {module, _, Bin, File} = {module, ?MODULE, element(2, code:get_object_code(?MODULE)),
                              code:which(?MODULE)},
    Rss0 = erlang:memory(total),
    % one client keeps calling the servers through the upgrade (like relhandler's bench)
    Self = self(),
    PidT = list_to_tuple(Pids),
    Client = spawn(fun() -> client_loop(Self, PidT, 1, 0, 0, 0) end),
    timer:sleep(300),
    Client ! {mark, self()},
    receive {marked, Before} -> ok end,
    T0 = now_us(),
    Susp = [{P, begin ok = sys:suspend(P), now_us() end} || P <- Pids],
    T1 = now_us(),
    {module, ?MODULE} = code:load_binary(?MODULE, File, Bin),
    T2 = now_us(),
    [ok = sys:change_code(P, ?MODULE, "1", []) || P <- Pids],
    T3 = now_us(),
    Res = [{P, begin ok = sys:resume(P), now_us() end} || P <- Pids],
    T4 = now_us(),
    timer:sleep(200),
    Client ! {stop, self()},
    receive {client, MaxDuring, Failed} -> ok end,
    Pauses = lists:sort([R - S || {{_, S}, {_, R}} <- lists:zip(Susp, Res)]),
    Len = length(Pauses),
    json([{"bench", "upgrade"}, {"side", "otp"}, {"n", N},
          {"total_ms", (T4 - T0) / 1000}, {"suspend_ms", (T1 - T0) / 1000},
          {"load_ms", (T2 - T1) / 1000}, {"code_change_ms", (T3 - T2) / 1000},
          {"resume_ms", (T4 - T3) / 1000},
          {"pause_p50_ms", lists:nth(max(1, Len div 2), Pauses) / 1000},
          {"pause_p99_ms", lists:nth(max(1, (Len * 99) div 100), Pauses) / 1000},
          {"pause_max_ms", lists:last(Pauses) / 1000},
          {"calls_failed", Failed},
          {"call_p_max_before_ms", Before / 1000},
          {"call_max_during_ms", MaxDuring / 1000},
          {"mem_mb", Rss0 / 1048576}]),
    halt(0).

%% Max is the slowest call since the last {mark}: before it, the baseline; after, "during".
client_loop(Parent, PidT, I, Max, MaxBefore, Failed) ->
    receive
        {mark, From} -> From ! {marked, Max}, client_loop(Parent, PidT, I, 0, Max, Failed);
        {stop, From} -> From ! {client, Max, Failed}
    after 0 ->
        P = element(1 + (I rem tuple_size(PidT)), PidT),
        T0 = now_us(),
        Ok = (catch gen_server:call(P, ping, 60000)),
        Dt = now_us() - T0,
        F = case Ok of pong -> Failed; _ -> Failed + 1 end,
        client_loop(Parent, PidT, I + 7, max(Max, Dt), MaxBefore, F)
    end.

call_loop(S, Deadline, C) ->
    case C rem 1000 =:= 0 andalso now_us() > Deadline of
        true -> C;
        false -> pong = gen_server:call(S, ping), call_loop(S, Deadline, C + 1)
    end.
