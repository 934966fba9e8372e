%%% Client sessions held inside ejabberd, without sockets: the benchmark's
%%% way past this machine's open-file limit, which stops real connections
%%% short of 20,000 (docs/benchmarks.md, "Past the open-file limit: sessions
%%% held inside Prosody"). The same request as Prosody's
%%% mod_lab_held_sessions.lua, loaded on every node by
%%% `EjabberdOptions::held_sessions` (lab/src/ejabberd.rs), compiled by the
%%% lab with the system's erlc.
%%%
%%% Each session is a process of its own registered with the session
%%% manager as ejabberd_c2s registers a login (ejabberd_sm:open_session/6
%%% with the address it was given, then set_presence/6 with priority 0), so
%%% the server lists it on every node of a cluster, states its address in
%%% user-stats and routes probes for its user to it. What a real session's
%%% process does with its initial presence and with a probe, this one does
%%% for the contact only: the initial presence goes to the contact (the
%%% component, unless it has XEP-0356 presence permission), and a probe from
%%% anyone is answered with the same presence, stamped with the time it was
%%% sent (as a real session answers). No account, roster or socket
%%% is made; what else the server sends the process is dropped.
%%%
%%% Asked for by the lab's admin:
%%%   <iq type='set' to='DOMAIN'>
%%%     <sessions xmlns='urn:pubpresence:lab:held-sessions' prefix='base'
%%%       users='10000' resources='10' sessions='100000' first='127.0.0.2'
%%%       contact='COMPONENT' rate='1000'/>
%%%   </iq>
%%% Users PREFIX1..PREFIXn get RESOURCES sessions each (r1, r2, ...),
%%% SESSIONS in all, the k-th session the k-th address from FIRST (host
%%% numbers 0 and 255 skipped, as the lab's `sim::address` counts them). The
%%% answer comes once every session has sent its presence; the sessions are
%%% made a batch at a time, at most RATE a second when given.
%%%
%%% Records are left out (no xmpp.hrl): the same source then compiles for
%%% ejabberd 23.01 and 24.12, whose xmpp libraries differ.

-module(mod_lab_held_sessions).

-export([start/2, stop/1, reload/3, depends/2, mod_options/1, mod_doc/0,
         decode_iq_subel/1, process_iq/1]).

-define(NS, <<"urn:pubpresence:lab:held-sessions">>).
-define(BATCH, 200).

start(Host, _Opts) ->
    gen_iq_handler:add_iq_handler(ejabberd_local, Host, ?NS, ?MODULE, process_iq),
    ok.

stop(Host) ->
    gen_iq_handler:remove_iq_handler(ejabberd_local, Host, ?NS),
    ok.

reload(_Host, _NewOpts, _OldOpts) -> ok.

depends(_Host, _Opts) -> [].

mod_options(_Host) -> [].

mod_doc() -> #{desc => <<"The pubpresence lab's sessions held without sockets.">>}.

%% The request as it came: gen_iq_handler otherwise decodes it with the xmpp
%% library, which refuses a namespace it does not know.
decode_iq_subel(El) -> El.

process_iq(IQ) ->
    case {xmpp:get_type(IQ), xmpp:get_els(IQ)} of
        {set, [{xmlel, <<"sessions">>, Attrs, _}]} ->
            case ask(Attrs) of
                {ok, Ask} ->
                    spawn(fun() -> hold(IQ, Ask) end),
                    ignore;
                error ->
                    xmpp:make_error(IQ, xmpp:err_bad_request(
                        <<"prefix, users, resources and first are needed">>, <<"en">>))
            end;
        _ ->
            xmpp:make_error(IQ, xmpp:err_bad_request())
    end.

ask(Attrs) ->
    Get = fun(Name) -> proplists:get_value(Name, Attrs) end,
    Int = fun(Name) ->
                  case Get(Name) of
                      undefined -> undefined;
                      V -> try binary_to_integer(V) catch _:_ -> undefined end
                  end
          end,
    First = case Get(<<"first">>) of
                undefined -> error;
                F -> inet:parse_ipv4_address(binary_to_list(F))
            end,
    case {Get(<<"prefix">>), Int(<<"users">>), Int(<<"resources">>), First} of
        {Prefix, Users, Resources, {ok, IP}}
          when is_binary(Prefix), is_integer(Users), is_integer(Resources), Resources > 0 ->
            Total = case Int(<<"sessions">>) of
                        undefined -> Users * Resources;
                        S -> min(S, Users * Resources)
                    end,
            Contact = case Get(<<"contact">>) of
                          undefined -> undefined;
                          C -> jid:decode(C)
                      end,
            Pause = case Int(<<"rate">>) of
                        R when is_integer(R), R > 0 -> ?BATCH * 1000 div R;
                        _ -> 0
                    end,
            {ok, #{prefix => Prefix, resources => Resources, total => Total,
                   first => IP, contact => Contact, pause => Pause}};
        _ ->
            error
    end.

hold(IQ, #{total := Total} = Ask) ->
    {_, Server, _} = jid:tolower(xmpp:get_to(IQ)),
    Started = erlang:monotonic_time(second),
    Made = batches(Server, Ask, 0, 0),
    logger:notice("lab_held_sessions: ~B of ~B sessions held in ~B s",
                  [Made, Total, erlang:monotonic_time(second) - Started]),
    Reply = case Made of
                Total ->
                    xmpp:make_iq_result(IQ);
                _ ->
                    Text = iolist_to_binary(io_lib:format(
                        "~B of ~B sessions could not be held (see the log)", [Total - Made, Total])),
                    xmpp:make_error(IQ, xmpp:err_internal_server_error(Text, <<"en">>))
            end,
    ejabberd_router:route(Reply).

%% A batch of sessions, each waited for, then a pause for the server's
%% other work; returns how many were made.
batches(_Server, #{total := Total}, Index, Made) when Index >= Total ->
    Made;
batches(Server, #{total := Total, pause := Pause} = Ask, Index, Made) ->
    Stop = min(Index + ?BATCH, Total),
    Self = self(),
    Pids = [spawn(fun() -> session(Self, Server, Ask, K) end) || K <- lists:seq(Index, Stop - 1)],
    Ok = lists:foldl(
           fun(Pid, N) ->
                   receive
                       {held, Pid, ok} -> N + 1;
                       {held, Pid, Err} ->
                           logger:warning("lab_held_sessions: ~p", [Err]),
                           N
                   after 30000 ->
                           logger:warning("lab_held_sessions: a session took more than 30 s"),
                           N
                   end
           end, 0, Pids),
    timer:sleep(Pause),
    batches(Server, Ask, Stop, Made + Ok).

session(Holder, Server, #{prefix := Prefix, resources := Resources, first := First,
                          contact := Contact}, K) ->
    User = <<Prefix/binary, (integer_to_binary(K div Resources + 1))/binary>>,
    Resource = <<"r", (integer_to_binary(K rem Resources + 1))/binary>>,
    try
        JID = jid:make(User, Server, Resource),
        SID = ejabberd_sm:make_sid(),
        Info = [{ip, {address(First, K), 0}}, {conn, c2s}, {auth_module, ejabberd_auth_mnesia}],
        Pres = xmpp:decode({xmlel, <<"presence">>, [{<<"xmlns">>, <<"jabber:client">>}], []}),
        ejabberd_sm:open_session(SID, User, Server, Resource, 0, Info),
        ejabberd_sm:set_presence(SID, User, Server, Resource, 0, Pres),
        case Contact of
            undefined -> ok;
            _ -> ejabberd_router:route(xmpp:set_from_to(Pres, JID, Contact))
        end,
        Holder ! {held, self(), ok},
        loop(JID, Pres, erlang:timestamp())
    catch Class:Reason ->
            Holder ! {held, self(), {User, Resource, Class, Reason}}
    end.

%% What the session manager hands the session: probes are answered with its
%% presence stamped with the time it was sent (XEP-0203), as ejabberd_c2s
%% answers them; calls get an answer so that no caller waits; the rest is
%% dropped.
loop(JID, Pres, Sent) ->
    receive
        {route, Pkt} when element(1, Pkt) == presence ->
            case xmpp:get_type(Pkt) of
                probe ->
                    Answer = xmpp:set_from_to(Pres, JID, xmpp:get_from(Pkt)),
                    ejabberd_router:route(misc:add_delay_info(Answer, JID, Sent));
                _ ->
                    ok
            end,
            loop(JID, Pres, Sent);
        {'$gen_call', From, _} ->
            gen:reply(From, {error, held_session}),
            loop(JID, Pres, Sent);
        _ ->
            loop(JID, Pres, Sent)
    end.

%% The lab's `sim::address`: FIRST counted up by Index, hosts 1..254 of
%% each /24.
address({A, B, C, D}, Index) ->
    Block0 = (A bsl 16) bor (B bsl 8) bor C,
    N = Index + min(max(D, 1), 254) - 1,
    Block = Block0 + N div 254,
    {(Block bsr 16) band 255, (Block bsr 8) band 255, Block band 255, N rem 254 + 1}.
