package metrics

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gwrap/gwrap/internal/testkit"
)

// readmeAlerts are the PromQL alerts of the README, one expression a line, in order.
func readmeAlerts(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(b), "```promql\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("no promql block in the README")
	}
	var out []string
	for _, l := range strings.Split(block, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// TestReadmeAlerts evaluates the README's alerts with promtool on the series gwrap exposes, role
// label included: an OOM kill of a dirty worker, a dirty worker's heartbeat past 80 % of
// --dirty-timeout (and an HTTP worker's well within --timeout), every HTTP worker busy while
// requests queue, an action past --dirty-timeout. Each fires with the labels that say which.
func TestReadmeAlerts(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testkit.Unavailable(t, "promtool is not installed (apt-get install prometheus)")
	}
	alerts := readmeAlerts(t)
	if len(alerts) != 7 {
		t.Fatalf("%d alerts in the README, the test knows 7: %q", len(alerts), alerts)
	}
	dir := t.TempDir()
	var rules strings.Builder
	rules.WriteString("groups:\n- name: gwrap\n  rules:\n")
	for i, a := range alerts {
		rules.WriteString("  - alert: A" + string(rune('0'+i)) + "\n    expr: '" + strings.ReplaceAll(a, "'", "''") + "'\n")
	}
	tests := `rule_files: [rules.yml]
evaluation_interval: 1m
tests:
- interval: 1m
  input_series:
  - series: 'gwrap_worker_kills_total{cause="oom_killed",role="dirty"}'
    values: '0 0 1 1 1'
  - series: 'gwrap_worker_kills_total{cause="oom_killed",role="http"}'
    values: '0 0 0 0 0'
  - series: 'gwrap_worker_heartbeat_age_max_seconds{role="dirty"}'
    values: '10 100 250 250 250'
  - series: 'gwrap_gunicorn_timeout_seconds{role="dirty"}'
    values: '300 300 300 300 300'
  - series: 'gwrap_worker_heartbeat_age_max_seconds{role="http"}'
    values: '1 2 3 3 3'
  - series: 'gwrap_gunicorn_timeout_seconds{role="http"}'
    values: '30 30 30 30 30'
  - series: 'gwrap_workers_busy{role="http"}'
    values: '4 4 4 4 4'
  - series: 'gwrap_workers{role="http"}'
    values: '4 4 4 4 4'
  - series: 'gwrap_workers{role="dirty"}'
    values: '2 2 2 2 2'
  - series: 'gwrap_listen_queue_length{listener="0.0.0.0:8000"}'
    values: '0 3 9 9 9'
  - series: 'gwrap_dirty_execution_timeouts_total{cause="blocked"}'
    values: '0 0 1 1 1'
  alert_rule_test:
  - eval_time: 4m
    alertname: A0
    exp_alerts:
    - exp_labels: {cause: oom_killed, role: dirty}
  - eval_time: 4m
    alertname: A2
    exp_alerts:
    - exp_labels: {role: dirty}
  - eval_time: 4m
    alertname: A5
    exp_alerts:
    - exp_labels: {role: http}
  - eval_time: 4m
    alertname: A6
    exp_alerts:
    - exp_labels: {cause: blocked}
`
	for name, content := range map[string]string{"rules.yml": rules.String(), "tests.yml": tests} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"check", "rules", "rules.yml"}, {"test", "rules", "tests.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s\nrules:\n%s", strings.Join(args, " "), err, out, rules.String())
		}
	}
}
