%% OTP's own release_handler:install_release/1 on N gen_servers, with a relup made by
%% systools:make_relup (the same shape as relhandler's upgrade benchmark).
%%   bench_rh:prepare(Root, N)  (in one erl run) lays out lib/bench-{1,2}, rel files, boot
%%                              scripts, the relup and RELEASES with release "1" permanent;
%%   bench_rh:run(Root)         (in a node booted with sasl releases_dir = Root/releases)
%%                              starts the app, times install_release("2"), prints JSON.
-module(bench_rh).
-export([prepare/1, run/1]).

prepare([Root0, N0, Src0]) ->
    Root = Root0, N = list_to_integer(N0),
    Src = Src0,
    Apps = [{A, V} || {A, _, V} <- [lists:keyfind(kernel, 1, application:loaded_applications()),
                                    lists:keyfind(stdlib, 1, application:loaded_applications())]],
    ok = application:load(sasl),
    {sasl, _, SaslV} = lists:keyfind(sasl, 1, application:loaded_applications()),
    Erts = erlang:system_info(version),
    [begin
         Ebin = filename:join([Root, "lib", "bench-" ++ V, "ebin"]),
         ok = filelib:ensure_dir(filename:join(Ebin, "x")),
         Opts = [{outdir, Ebin}, {d, vsn_n, list_to_integer(V)}],
         [{ok, _} = compile:file(filename:join(Src, M), Opts)
          || M <- ["bench_otp", "bench_sup", "bench_app"]],
         ok = file:write_file(filename:join(Ebin, "bench.app"), io_lib:format("~p.~n",
              [{application, bench, [{description, "bench"}, {vsn, V},
                {modules, [bench_otp, bench_sup, bench_app]},
                {registered, [bench_sup]}, {applications, [kernel, stdlib]},
                {mod, {bench_app, []}}, {env, [{workers, N}]}]}])),
         RelDir = filename:join([Root, "releases", V]),
         ok = filelib:ensure_dir(filename:join(RelDir, "x")),
         Rel = filename:join(RelDir, "bench"),
         ok = file:write_file(Rel ++ ".rel", io_lib:format("~p.~n",
              [{release, {"bench", V}, {erts, Erts},
                [{kernel, proplists:get_value(kernel, Apps)},
                 {stdlib, proplists:get_value(stdlib, Apps)},
                 {sasl, SaslV}, {bench, V}]}])),
         {ok, _, _} = systools:make_script(Rel, [{path, [Ebin]}, {outdir, RelDir}, silent,
                                                 local]),
         {ok, _} = file:copy(Rel ++ ".boot", filename:join(RelDir, "start.boot"))
     end || V <- ["1", "2"]],
    ok = file:write_file(filename:join([Root, "lib", "bench-2", "ebin", "bench.appup"]),
         io_lib:format("~p.~n", [{"2", [{"1", [{update, bench_otp, {advanced, []}}]}],
                                  [{"1", [{update, bench_otp, {advanced, []}}]}]}])),
    Path = [filename:join([Root, "lib", "bench-" ++ V, "ebin"]) || V <- ["1", "2"]],
    {ok, _, _, []} = systools:make_relup(filename:join([Root, "releases", "2", "bench"]),
        [filename:join([Root, "releases", "1", "bench"])],
        [filename:join([Root, "releases", "1", "bench"])],
        [{path, Path}, {outdir, filename:join([Root, "releases", "2"])}, silent]),
    ok = release_handler:create_RELEASES(Root, filename:join(Root, "releases"),
        filename:join([Root, "releases", "1", "bench.rel"]),
        [{bench, "1", filename:join(Root, "lib")}]),
    halt(0).

run([Root0]) ->
    Root = Root0,
    {ok, _} = application:ensure_all_started(sasl),
    ok = application:start(bench),
    Pids = [P || {_, P, _, _} <- supervisor:which_children(bench_sup)],
    {ok, "2"} = release_handler:set_unpacked(
        filename:join([Root, "releases", "2", "bench.rel"]),
        [{bench, "2", filename:join(Root, "lib")}]),
    [ok = release_handler:install_file("2", filename:join([Root, "releases", "2", F]))
     || F <- ["relup", "start.boot"]],
    T0 = erlang:monotonic_time(microsecond),
    {ok, "1", _} = release_handler:install_release("2"),
    T1 = erlang:monotonic_time(microsecond),
    io:format("{\"bench\":\"upgrade_rh\",\"side\":\"otp\",\"n\":~b,\"total_ms\":~.3f}~n",
              [length(Pids), (T1 - T0) / 1000]),
    halt(0).
