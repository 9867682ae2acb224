-- Greets each message's text as a name, with the greet plugin.
return {
  on_message = function(conn, name)
    local reply, err = greet.hello(name)
    conn:send(reply or ("error: " .. err))
  end,
}
