// Command argocd-health runs an Argo CD resource health check (a Lua script) against Kubernetes
// objects the way Argo CD's application controller does, so the script shipped in
// charts/schemashift/argocd/health.lua is tested in the VM Argo CD embeds (gopher-lua), not in a
// look-alike.
//
// Usage: argocd-health SCRIPT < objects.json
//
// stdin holds one JSON object or a JSON array of objects; stdout gets a JSON array with, for each
// object, {"status": ..., "message": ...} or {"error": ...}. Exit 0 unless the input or the
// script cannot be read.
//
// What is reproduced from Argo CD (util/lua, resource customizations from argocd-cm, whose
// useOpenLibs defaults to false): a Lua state without the standard libraries, then only the
// package, base and table libraries opened (Argo CD adds a reduced os library this script does
// not use: it is absent here, so a script relying on it fails here first); the object as the
// global `obj` (maps as tables, arrays as 1-based tables, numbers as Lua numbers); a one second
// deadline; the returned table encoded with layeh.com/gopher-json and read as {status, message};
// a status outside Healthy, Progressing, Suspended, Degraded, Missing, Unknown becomes Unknown
// with Argo CD's message. A non-table result is an error, as in Argo CD.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

// Health is what Argo CD reads from the script's result (gitops-engine's HealthStatus).
type Health struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

var validStatus = map[string]bool{
	"Healthy": true, "Progressing": true, "Suspended": true,
	"Degraded": true, "Missing": true, "Unknown": true,
}

func toLua(state *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		table := state.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(toLua(state, item))
		}
		return table
	case map[string]any:
		table := state.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), toLua(state, item))
		}
		return table
	}
	return lua.LNil
}

func newState() *lua.LState {
	state := lua.NewState(lua.Options{SkipOpenLibs: true})
	libs := []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	}
	for _, lib := range libs {
		if err := state.CallByParam(lua.P{Fn: state.NewFunction(lib.open), NRet: 0, Protect: true},
			lua.LString(lib.name)); err != nil {
			panic(err)
		}
	}
	return state
}

func check(script string, object map[string]any) Health {
	state := newState()
	defer state.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	state.SetContext(ctx)
	state.SetGlobal("obj", toLua(state, object))
	if err := state.DoString(script); err != nil {
		return Health{Error: err.Error()}
	}
	result := state.Get(-1)
	if result.Type() != lua.LTTable {
		return Health{Error: fmt.Sprintf("expect table output from Lua script, not %s", result.Type())}
	}
	encoded, err := luajson.Encode(result)
	if err != nil {
		return Health{Error: err.Error()}
	}
	var health Health
	if err := json.Unmarshal(encoded, &health); err != nil {
		return Health{Error: err.Error()}
	}
	if !validStatus[health.Status] {
		return Health{Status: "Unknown", Message: "Lua returned an invalid health status"}
	}
	return health
}

func objects(input []byte) ([]map[string]any, error) {
	var many []map[string]any
	if err := json.Unmarshal(input, &many); err == nil {
		return many, nil
	}
	var one map[string]any
	if err := json.Unmarshal(input, &one); err != nil {
		return nil, fmt.Errorf("stdin is neither a JSON object nor an array of objects: %w", err)
	}
	return []map[string]any{one}, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health SCRIPT < objects.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	found, err := objects(input)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	results := make([]Health, 0, len(found))
	for _, object := range found {
		results = append(results, check(string(script), object))
	}
	out, _ := json.Marshal(results)
	fmt.Println(string(out))
}
