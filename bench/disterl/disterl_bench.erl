%% The `partisan bench` workloads on Distributed Erlang, for comparison.
%%
%% Two nodes on loopback: this one (the driver) and a peer started with the `peer` module as a
%% second OS process (it inherits the CPU affinity, so `taskset` pins both). Prints the same
%% field names as `partisan bench --json`, one JSON object per line:
%%
%%   oneway --payload 64 --senders 1 --duration 5       msgs_per_sec, mb_per_sec
%%   echo   --payload 64 --callers 1 --duration 5       ops_per_sec, mb_per_sec, p50_us, p99_us, p999_us
%%   hol    --duration 5 [--stream-rate MB_PER_SEC]     idle_p99_us, loaded_p99_us, loaded_p50_us,
%%                                                      stream_mb_per_sec
%%   rpc    --payload 64 --callers 1,64 --duration 5    ops_per_sec, p50_us, p99_us, p999_us
%%                                                      (erpc:call of an echo function on the peer)
%%
%% --payload and --senders/--callers take comma-separated lists (every combination is a line).
%% Distributed Erlang has one connection per node pair, so the head-of-line stream always
%% shares the probe's connection. Run through run.sh, which compiles this file and starts the
%% driver node.
-module(disterl_bench).

-export([main/0, main/1, start_ctl/0, ctl/1, echo/0, sink/2, rpc_echo/1]).

-define(MB, 1000000).

%% Called by `-run disterl_bench main -extra BENCH OPTIONS...` (options after -extra are not
%% taken as emulator flags).
main() -> main([]).

main(_) ->
    Code = try
               run(init:get_plain_arguments()),
               0
           catch
               Class:Reason:Stack ->
                   io:format(standard_error, "disterl_bench: ~p:~p~n~p~n", [Class, Reason, Stack]),
                   2
           end,
    erlang:halt(Code).

run([Bench | Rest]) ->
    Opts = parse(Rest, #{payload => [64], senders => [1], callers => default, duration => 5.0,
                         warmup => undefined, stream_rate => undefined,
                         stream_payload => 1048576}),
    Peer = start_peer(),
    case Bench of
        "oneway" ->
            [line(oneway(Peer, Opts, P, S)) || P <- maps:get(payload, Opts),
                                               S <- maps:get(senders, Opts)];
        "echo" ->
            [line(echo(Peer, Opts, P, C)) || P <- maps:get(payload, Opts),
                                             C <- callers(Opts, [1])];
        "rpc" ->
            [line(rpc(Peer, Opts, P, C)) || P <- maps:get(payload, Opts),
                                            C <- callers(Opts, [1, 64])];
        "hol" ->
            line(hol(Peer, Opts));
        Other ->
            error({unknown_bench, Other})
    end,
    ok.

parse([], Acc) -> Acc;
parse(["--payload", V | R], Acc) -> parse(R, Acc#{payload => [bytes(S) || S <- split(V)]});
parse(["--senders", V | R], Acc) -> parse(R, Acc#{senders => [list_to_integer(S) || S <- split(V)]});
parse(["--callers", V | R], Acc) -> parse(R, Acc#{callers => [list_to_integer(S) || S <- split(V)]});
parse(["--duration", V | R], Acc) -> parse(R, Acc#{duration => num(V)});
parse(["--warmup", V | R], Acc) -> parse(R, Acc#{warmup => num(V)});
parse(["--stream-rate", V | R], Acc) -> parse(R, Acc#{stream_rate => num(V)});
parse(["--stream-payload", V | R], Acc) -> parse(R, Acc#{stream_payload => bytes(V)});
parse(["--json" | R], Acc) -> parse(R, Acc);
parse([Other | _], _) -> error({unknown_option, Other}).

split(V) -> string:lexemes(V, ",").

callers(Opts, Default) ->
    case maps:get(callers, Opts) of
        default -> Default;
        Cs -> Cs
    end.

num(S) ->
    case string:to_float(S) of
        {F, []} -> F;
        _ -> float(list_to_integer(S))
    end.

bytes(S) ->
    {N, Unit} = string:to_integer(S),
    N * case string:lowercase(Unit) of
            "" -> 1; "b" -> 1;
            "k" -> 1024; "kib" -> 1024; "kb" -> 1024;
            "m" -> 1048576; "mib" -> 1048576; "mb" -> 1048576
        end.

warmup(Opts) ->
    case maps:get(warmup, Opts) of
        undefined -> min(1.0, maps:get(duration, Opts) / 5);
        W -> W
    end.

ms(Secs) -> round(Secs * 1000).

now_ns() -> erlang:monotonic_time(nanosecond).

%% --- the peer node --------------------------------------------------------------------------

start_peer() ->
    Cookie = atom_to_list(erlang:get_cookie()),
    Ebin = filename:dirname(code:which(?MODULE)),
    Name = list_to_atom("bench_peer_" ++ os:getpid()),
    {ok, _Pid, Node} = peer:start_link(#{name => Name, host => "127.0.0.1", longnames => true,
                                        args => ["-setcookie", Cookie, "-pa", Ebin,
                                                 "-kernel", "inet_dist_use_interface",
                                                 "{127,0,0,1}"]}),
    ok = erpc:call(Node, ?MODULE, start_ctl, []),
    Node.

%% Runs on the peer: a registered control process owning the sinks' counters.
start_ctl() ->
    C = counters:new(4, [write_concurrency]),
    Pid = spawn(?MODULE, ctl, [C]),
    true = register(bench_ctl, Pid),
    ok.

ctl(C) ->
    receive
        {sink, From, Set} ->
            Ix = case Set of oneway -> 1; stream -> 3 end,
            From ! {ready, spawn(?MODULE, sink, [C, Ix])};
        {echo, From} ->
            From ! {ready, spawn(?MODULE, echo, [])};
        {counts, From} ->
            From ! {counts, counters:get(C, 1), counters:get(C, 2), counters:get(C, 3),
                    counters:get(C, 4), now_ns()}
    end,
    ctl(C).

echo() ->
    receive
        {From, Bin} -> From ! {echo, Bin}, echo()
    end.

sink(C, Ix) ->
    receive
        Bin ->
            counters:add(C, Ix, 1),
            counters:add(C, Ix + 1, byte_size(Bin)),
            sink(C, Ix)
    end.

remote(Peer, Req) ->
    {bench_ctl, Peer} ! {Req, self()},
    receive {ready, Pid} -> Pid after 30000 -> error(peer_timeout) end.

remote_sink(Peer, Set) ->
    {bench_ctl, Peer} ! {sink, self(), Set},
    receive {ready, Pid} -> Pid after 30000 -> error(peer_timeout) end.

counts(Peer) ->
    {bench_ctl, Peer} ! {counts, self()},
    receive {counts, M, B, SM, SB, At} -> {M, B, SM, SB, At} after 30000 -> error(peer_timeout) end.

%% --- one-way --------------------------------------------------------------------------------

oneway(Peer, Opts, Payload, Senders) ->
    Bin = binary:copy(<<16#a5>>, Payload),
    Sinks = [remote_sink(Peer, oneway) || _ <- lists:seq(1, Senders)],
    Ps = [spawn_link(fun() -> send_loop(S, Bin) end) || S <- Sinks],
    timer:sleep(ms(warmup(Opts))),
    {M0, B0, _, _, T0} = counts(Peer),
    timer:sleep(ms(maps:get(duration, Opts))),
    {M1, B1, _, _, T1} = counts(Peer),
    [begin unlink(P), exit(P, kill) end || P <- Ps],
    Secs = (T1 - T0) / 1.0e9,
    [{system, disterl}, {bench, oneway}, {payload, Payload}, {senders, Senders},
     {duration_s, maps:get(duration, Opts)}, {messages, M1 - M0},
     {msgs_per_sec, (M1 - M0) / Secs}, {mb_per_sec, (B1 - B0) / Secs / ?MB}].

send_loop(Sink, Bin) ->
    send_n(Sink, Bin, 64),
    send_loop(Sink, Bin).

send_n(_, _, 0) -> ok;
send_n(Sink, Bin, N) -> Sink ! Bin, send_n(Sink, Bin, N - 1).

%% --- echo -----------------------------------------------------------------------------------

echo(Peer, Opts, Payload, Callers) ->
    Bin = binary:copy(<<16#5a>>, Payload),
    Echoes = [remote(Peer, echo) || _ <- lists:seq(1, Callers)],
    Lats = run_callers(Echoes, Bin, Opts),
    Dur = maps:get(duration, Opts),
    Ops = length(Lats),
    [{system, disterl}, {bench, echo}, {payload, Payload}, {callers, Callers},
     {duration_s, Dur}, {ops, Ops}, {ops_per_sec, Ops / Dur},
     {mb_per_sec, Ops * Payload / Dur / ?MB}
     | quantiles(Lats, [{p50_us, 0.5}, {p99_us, 0.99}, {p999_us, 0.999}])].

%% Runs one caller per echo process over [now + warmup, + duration); returns every recorded
%% round trip (nanoseconds), sorted.
run_callers(Echoes, Bin, Opts) ->
    Start = now_ns() + round(warmup(Opts) * 1.0e9),
    End = Start + round(maps:get(duration, Opts) * 1.0e9),
    Self = self(),
    Ps = [spawn_link(fun() -> Self ! {lats, self(), call_loop(E, Bin, Start, End, [])} end)
          || E <- Echoes],
    Lists = [receive {lats, P, L} -> L end || P <- Ps],
    lists:sort(lists:append(Lists)).

call_loop(Echo, Bin, Start, End, Acc) ->
    T0 = now_ns(),
    case T0 >= End of
        true -> Acc;
        false ->
            Echo ! {self(), Bin},
            receive {echo, _} -> ok end,
            case T0 >= Start of
                true -> call_loop(Echo, Bin, Start, End, [now_ns() - T0 | Acc]);
                false -> call_loop(Echo, Bin, Start, End, Acc)
            end
    end.

quantiles(Sorted, Qs) ->
    N = length(Sorted),
    T = list_to_tuple(Sorted),
    [{Name, case N of
                0 -> 0.0;
                _ -> element(max(1, min(N, ceil(Q * N))), T) / 1000
            end} || {Name, Q} <- Qs].

%% --- rpc ------------------------------------------------------------------------------------

%% Runs on the peer, in the process erpc spawns for each call.
rpc_echo(Bin) -> Bin.

rpc(Peer, Opts, Payload, Callers) ->
    Bin = binary:copy(<<16#5a>>, Payload),
    Start = now_ns() + round(warmup(Opts) * 1.0e9),
    End = Start + round(maps:get(duration, Opts) * 1.0e9),
    Self = self(),
    Ps = [spawn_link(fun() -> Self ! {lats, self(), rpc_loop(Peer, Bin, Start, End, [])} end)
          || _ <- lists:seq(1, Callers)],
    Lats = lists:sort(lists:append([receive {lats, P, L} -> L end || P <- Ps])),
    Dur = maps:get(duration, Opts),
    Ops = length(Lats),
    [{system, disterl}, {bench, rpc}, {payload, Payload}, {callers, Callers},
     {duration_s, Dur}, {ops, Ops}, {ops_per_sec, Ops / Dur},
     {mb_per_sec, Ops * Payload / Dur / ?MB}
     | quantiles(Lats, [{p50_us, 0.5}, {p99_us, 0.99}, {p999_us, 0.999}])].

rpc_loop(Peer, Bin, Start, End, Acc) ->
    T0 = now_ns(),
    case T0 >= End of
        true -> Acc;
        false ->
            Bin = erpc:call(Peer, ?MODULE, rpc_echo, [Bin], 30000),
            case T0 >= Start of
                true -> rpc_loop(Peer, Bin, Start, End, [now_ns() - T0 | Acc]);
                false -> rpc_loop(Peer, Bin, Start, End, Acc)
            end
    end.

%% --- head-of-line ---------------------------------------------------------------------------

hol(Peer, Opts) ->
    Probe = binary:copy(<<16#5a>>, 64),
    Echo = remote(Peer, echo),
    Idle = run_callers([Echo], Probe, Opts),
    Sink = remote_sink(Peer, stream),
    Chunk = binary:copy(<<16#c3>>, maps:get(stream_payload, Opts)),
    Rate = maps:get(stream_rate, Opts),
    Streamer = spawn_link(fun() -> stream_loop(Sink, Chunk, Rate, now_ns()) end),
    Self = self(),
    spawn_link(fun() ->
                       timer:sleep(ms(warmup(Opts))),
                       C0 = counts(Peer),
                       timer:sleep(ms(maps:get(duration, Opts))),
                       Self ! {stream_counts, C0, counts(Peer)}
               end),
    Loaded = run_callers([Echo], Probe, Opts),
    {{_, _, _, SB0, T0}, {_, _, _, SB1, T1}} =
        receive {stream_counts, A, B} -> {A, B} after 60000 -> error(peer_timeout) end,
    unlink(Streamer),
    exit(Streamer, kill),
    Secs = (T1 - T0) / 1.0e9,
    [{system, disterl}, {bench, hol}, {payload, 64},
     {stream_payload, maps:get(stream_payload, Opts)}, {same_channel, true},
     {duration_s, maps:get(duration, Opts)}]
        ++ [{stream_rate, Rate} || Rate =/= undefined]
        ++ quantiles(Idle, [{idle_p50_us, 0.5}, {idle_p99_us, 0.99}])
        ++ quantiles(Loaded, [{loaded_p50_us, 0.5}, {loaded_p99_us, 0.99},
                              {loaded_p999_us, 0.999}])
        ++ [{stream_mb_per_sec, (SB1 - SB0) / Secs / ?MB},
            {idle_probes, length(Idle)}, {loaded_probes, length(Loaded)}].

stream_loop(Sink, Chunk, undefined, _) ->
    Sink ! Chunk,
    stream_loop(Sink, Chunk, undefined, 0);
stream_loop(Sink, Chunk, Rate, Next0) ->
    Period = round(byte_size(Chunk) / (Rate * ?MB) * 1.0e9),
    Now = now_ns(),
    Next1 = Next0 + Period,
    %% After a stall, resume the pace instead of bursting to catch up.
    Next = case Next1 + 50000000 < Now of true -> Now; false -> Next1 end,
    %% receive-after has millisecond resolution; the schedule (Next) keeps the average exact.
    case (Next - Now) div 1000000 of
        Wait when Wait > 0 -> receive after Wait -> ok end;
        _ -> ok
    end,
    Sink ! Chunk,
    stream_loop(Sink, Chunk, Rate, Next).

%% --- output ---------------------------------------------------------------------------------

line(Fields) ->
    Body = lists:join(",", [[$", atom_to_list(K), $", $:, value(V)] || {K, V} <- Fields]),
    io:format("{~s}~n", [Body]).

value(V) when is_boolean(V) -> atom_to_list(V);
value(V) when is_atom(V) -> [$", atom_to_list(V), $"];
value(V) when is_integer(V) -> integer_to_list(V);
value(V) when is_float(V) -> io_lib:format("~.1f", [V]).
