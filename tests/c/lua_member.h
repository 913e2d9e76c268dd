/* Test-only: a member record as a Lua table, for the test modules over the
 * member table (qcmembers.c) and membership (qcmembership.c). */
#ifndef QC_TEST_LUA_MEMBER_H
#define QC_TEST_LUA_MEMBER_H

#include <lua.h>

#include "core/members.h"
#include "lua_fields.h"

/* Pushes {identifier, host, port, role, priority, metadata, voting} and
 * room for extra more fields the caller sets. */
static void push_rec_fields(lua_State *L, const qc_member_rec *m, int extra)
{
    lua_createtable(L, 0, 7 + extra);
    set_str(L, "identifier", m->identifier);
    set_str(L, "host", m->host);
    set_int(L, "port", m->port);
    set_str(L, "role", qc_member_role_name(m->role));
    set_int(L, "priority", m->priority);
    set_str(L, "metadata", m->metadata);
    set_bool(L, "voting", m->voting);
}

#endif
