%% Differential-test driver: evaluates systools_rc:translate_scripts/4 for every case in a
%% file of terms {Id, Mode, Scripts, Appls, PreAppls} (Appls as {Name, Vsn, Mods, Type})
%% and prints one JSON line per case: {"id": Id, "result": <term as JSON>}.
-module(rc_driver).
-export([main/1]).

main([File]) ->
    {ok, Cases} = file:consult(File),
    lists:foreach(fun run/1, Cases),
    halt(0).

app({Name, Vsn, Mods0, Type}) ->
    Mods = if is_tuple(Mods0) -> tuple_to_list(Mods0); true -> Mods0 end,
    {application, Name, Type, Vsn, "", "", Mods, [], [], [], [], [], infinity, infinity,
     [], undefined, ""}.

run({Id, Mode, Scripts, Appls, PreAppls}) ->
    Res = (catch systools_rc:translate_scripts(Mode, Scripts, [app(A) || A <- Appls],
                                               [app(A) || A <- PreAppls])),
    io:put_chars([<<"{\"id\":">>, json(Id), <<",\"result\":">>, json(Res), <<"}\n">>]).

json(A) when is_atom(A) -> [$", esc(atom_to_list(A)), $"];
json(I) when is_integer(I) -> integer_to_list(I);
json(T) when is_tuple(T) -> [<<"{\"t\":[">>, join([json(E) || E <- tuple_to_list(T)]), <<"]}">>];
json([]) -> <<"[]">>;
json(L) when is_list(L) ->
    case io_lib:printable_unicode_list(L) andalso lists:all(fun(C) -> C >= 32 end, L) of
        true -> [$", esc(L), $"];
        false -> [$[, join([json(E) || E <- L]), $]]
    end;
json(B) when is_binary(B) -> [$", esc(binary_to_list(B)), $"];
json(Other) -> [$", esc(lists:flatten(io_lib:format("~p", [Other]))), $"].

join([]) -> [];
join([H | T]) -> [H | [[$, | X] || X <- T]].

esc(S) -> lists:flatmap(fun($") -> "\\\""; ($\\) -> "\\\\"; ($\n) -> "\\n"; (C) -> [C] end, S).
