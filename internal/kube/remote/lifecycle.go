package remote

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	kapi "github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/controller"
)

// fatalWaiting are the launcher container's waiting reasons that do not
// clear up by waiting: the launcher image cannot be had, or the container
// cannot be made.
var fatalWaiting = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "ErrImageNeverPull": true, "InvalidImageName": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
}

// create makes sb and waits until its Pod is Ready, reporting each step
// (stopped: until the controller says it is stopped, with no Pod); on
// failure or cancellation it deletes the Sandbox again.
func (s *server) create(ctx context.Context, sb *kapi.Sandbox, stopped bool, progress func(api.Event)) (api.VM, error) {
	if stopped {
		no := false
		sb.Spec.Running = &no
	}
	made, kept, err := s.kube.createSandbox(ctx, sb)
	if errdefs.IsAlreadyExists(err) {
		return api.VM{}, fmt.Errorf("vm %s exists in namespace %s: pick another --name, or delete it first: %w", sb.Name, s.c.Namespace, errdefs.ErrAlreadyExists)
	}
	if err != nil {
		return api.VM{}, err
	}
	progress(api.Event{Message: fmt.Sprintf("sandbox %s created in namespace %s", made.Name, s.c.Namespace)})
	var v api.VM
	switch {
	case stopped && !kept:
		err = noRunningField("vm create --no-start", made.Name)
	case stopped:
		v, err = s.waitState(ctx, made.Name, api.VMStopped)
	default:
		v, err = s.waitReady(ctx, made, progress)
	}
	if err == nil {
		return v, nil
	}
	// Roll back, as a failed local create does; the cleanup outlives a
	// caller who went away.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if derr := s.kube.deleteSandbox(dctx, made.Name, made.UID); derr != nil {
		return api.VM{}, fmt.Errorf("%w (and deleting sandbox %s failed: %v: delete it with banger vm delete --force %s)", err, made.Name, derr, made.Name)
	}
	return api.VM{}, err
}

// waitReady polls sb and its Pod until the Pod is Ready, reporting what
// changes, and fails with the Pod's reason when the launcher cannot run.
func (s *server) waitReady(ctx context.Context, sb *kapi.Sandbox, progress func(api.Event)) (api.VM, error) {
	last := ""
	for {
		cur, err := s.kube.getSandbox(ctx, sb.Name)
		if errdefs.IsNotFound(err) {
			return api.VM{}, fmt.Errorf("vm %s: its sandbox was deleted while it started: %w", sb.Name, errdefs.ErrNotFound)
		}
		if err != nil {
			return api.VM{}, err
		}
		if cur.UID != sb.UID {
			return api.VM{}, fmt.Errorf("vm %s: its sandbox was replaced while it started: %w", sb.Name, errdefs.ErrAlreadyExists)
		}
		pod, err := s.kube.launcherPod(ctx, cur)
		if err != nil {
			return api.VM{}, err
		}
		msg, err := startStep(cur, pod)
		if err != nil {
			return api.VM{}, fmt.Errorf("vm %s: %w", sb.Name, err)
		}
		if podReady(pod) {
			progress(api.Event{Message: fmt.Sprintf("vm %s ready on node %s", sb.Name, pod.Spec.NodeName)})
			return VMFromSandbox(cur, pod), nil
		}
		if msg != last {
			progress(api.Event{Message: msg})
			last = msg
		}
		select {
		case <-ctx.Done():
			return api.VM{}, fmt.Errorf("vm %s: %w: %w", sb.Name, errdefs.ErrCanceled, ctx.Err())
		case <-time.After(s.c.Poll):
		}
	}
}

// startStep says where a starting Sandbox is, or why it will not start.
func startStep(sb *kapi.Sandbox, pod *corev1.Pod) (string, error) {
	st := sb.Status
	switch st.Phase {
	case kapi.PhaseFailed, kapi.PhaseUnknown:
		return "", fmt.Errorf("the launcher failed (%s): %s: %w", orDash(st.Reason), orDash(st.Message), errdefs.ErrUnavailable)
	case kapi.PhaseSucceeded:
		return "", fmt.Errorf("the launcher exited before the VM was ready: %w", errdefs.ErrUnavailable)
	}
	if pod == nil {
		return "waiting for the controller to make the launcher pod", nil
	}
	if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		return "", fmt.Errorf("launcher pod %s ended (%s) before the VM was ready: %s: %w", pod.Name, pod.Status.Phase, orDash(pod.Status.Message), errdefs.ErrUnavailable)
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return fmt.Sprintf("waiting for a node: %s", orDash(c.Message)), nil
		}
	}
	if pod.Spec.NodeName == "" {
		return "waiting for the scheduler", nil
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name != controller.ContainerName {
			continue
		}
		switch {
		case cs.State.Waiting != nil && fatalWaiting[cs.State.Waiting.Reason]:
			return "", fmt.Errorf("launcher pod %s on node %s: %s: %s: %w", pod.Name, pod.Spec.NodeName, cs.State.Waiting.Reason, orDash(cs.State.Waiting.Message), errdefs.ErrUnavailable)
		case cs.State.Waiting != nil:
			return fmt.Sprintf("launcher pod on node %s: %s", pod.Spec.NodeName, strings.TrimSpace(cs.State.Waiting.Reason+" "+cs.State.Waiting.Message)), nil
		case cs.State.Terminated != nil:
			t := cs.State.Terminated
			return "", fmt.Errorf("launcher exited %d (%s) before the VM was ready: %s: %w", t.ExitCode, t.Reason, orDash(t.Message), errdefs.ErrUnavailable)
		case cs.State.Running != nil:
			return fmt.Sprintf("launcher started on node %s, waiting for the VM to be ready", pod.Spec.NodeName), nil
		}
	}
	return fmt.Sprintf("scheduled on node %s", pod.Spec.NodeName), nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// delete deletes ref's Sandbox and waits until it and its Pod are gone.
// A running VM needs force, as on the local daemon; on a cluster the
// launcher stops the VM cleanly when its Pod is deleted.
func (s *server) delete(ctx context.Context, ref string, force bool) error {
	sb, pod, v, err := s.get(ctx, ref)
	if err != nil {
		return err
	}
	switch v.State {
	case api.VMRunning, api.VMStarting, api.VMUnknown:
		if !force {
			return fmt.Errorf("vm %s is %s: delete it with --force (the launcher stops it cleanly first): %w", v.Name, v.State, errdefs.ErrFailedPrecondition)
		}
	}
	if err := s.kube.deleteSandbox(ctx, sb.Name, sb.UID); err != nil {
		return err
	}
	if v.State == api.VMUnknown {
		// Its Pod, and with it the Sandbox (deleted in the foreground)
		// and its disk claim, go only when the node answers or is
		// deleted from the cluster; until then vm list says so.
		return nil
	}
	return s.waitGone(ctx, sb, pod)
}

// waitGone polls until sb (by UID) and pod (when not nil) no longer exist.
func (s *server) waitGone(ctx context.Context, sb *kapi.Sandbox, pod *corev1.Pod) error {
	for {
		cur, err := s.kube.getSandbox(ctx, sb.Name)
		sbGone := errdefs.IsNotFound(err) || (err == nil && cur.UID != sb.UID)
		if err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		podGone := true
		if pod != nil {
			if podGone, err = s.kube.podGone(ctx, pod); err != nil {
				return err
			}
		}
		if sbGone && podGone {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("vm %s: waiting for its deletion: %w: %w (it goes on in the cluster)", sb.Name, errdefs.ErrCanceled, ctx.Err())
		case <-time.After(s.c.Poll):
		}
	}
}

// prune deletes every VM that does not run (stopped, failed) and carries
// every label of sel, and waits until they are gone.
func (s *server) prune(ctx context.Context, sel map[string]string) (api.PruneVMsResult, error) {
	vms, sbs, err := s.vms(ctx)
	if err != nil {
		return api.PruneVMsResult{}, err
	}
	res := api.PruneVMsResult{Deleted: []string{}}
	var errs []error
	for i, v := range vms {
		if !api.MatchLabels(v.Labels, sel) || (v.State != api.VMStopped && v.State != api.VMError) {
			continue
		}
		sb := &sbs[i]
		pod, err := s.kube.launcherPod(ctx, sb)
		if err == nil {
			err = s.kube.deleteSandbox(ctx, sb.Name, sb.UID)
		}
		if err == nil {
			err = s.waitGone(ctx, sb, pod)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res.Deleted = append(res.Deleted, v.Name)
	}
	return res, errors.Join(errs...)
}

// noRunningField is the answer of a cluster whose Sandbox CRD has no
// spec.running yet.
func noRunningField(what, name string) error {
	return fmt.Errorf("vm %s: %s needs the Sandbox's spec.running, which this cluster's banger CRD does not have: update banger on the cluster (kubectl apply -k deploy/kubernetes): %w",
		name, what, errdefs.ErrFailedPrecondition)
}

// waitState polls VM name until it is in state.
func (s *server) waitState(ctx context.Context, name, state string) (api.VM, error) {
	for {
		_, _, v, err := s.get(ctx, name)
		if err != nil || v.State == state {
			return v, err
		}
		select {
		case <-ctx.Done():
			return api.VM{}, fmt.Errorf("vm %s: waiting for it to be %s (it is %s): %w: %w", name, state, v.State, errdefs.ErrCanceled, ctx.Err())
		case <-time.After(s.c.Poll):
		}
	}
}

// stop sets spec.running false, which makes the controller delete the
// Pod (the launcher stops the VM the data-safe way on SIGTERM) and keep
// the disk, and waits until the Pod is gone.
func (s *server) stop(ctx context.Context, ref string) (api.StopResult, error) {
	sb, pod, v, err := s.get(ctx, ref)
	if err != nil {
		return api.StopResult{}, err
	}
	if v.State == api.VMStopped {
		return api.StopResult{VM: v, Method: "already-stopped"}, nil
	}
	if v.State == api.VMUnknown {
		// A stop would wait for the node: its Pod goes only then.
		return api.StopResult{}, fmt.Errorf("vm %s is unknown (%s): it can be stopped once its node answers; vm delete --force deletes it now (its pod and disk go when the node answers or is deleted from the cluster): %w",
			v.Name, v.Reason, errdefs.ErrFailedPrecondition)
	}
	kept, err := s.kube.setRunning(ctx, sb.Name, false)
	if err != nil {
		return api.StopResult{}, err
	}
	if !kept {
		return api.StopResult{}, noRunningField("vm stop", sb.Name)
	}
	if pod != nil {
		for {
			gone, err := s.kube.podGone(ctx, pod)
			if err != nil {
				return api.StopResult{}, err
			}
			if gone {
				break
			}
			select {
			case <-ctx.Done():
				return api.StopResult{}, fmt.Errorf("vm %s: waiting for its pod to go: %w: %w (it goes on in the cluster)", sb.Name, errdefs.ErrCanceled, ctx.Err())
			case <-time.After(s.c.Poll):
			}
		}
	}
	v, err = s.waitState(ctx, sb.Name, api.VMStopped)
	return api.StopResult{VM: v, Method: "launcher"}, err
}

// start sets spec.running true, which makes the controller start a new
// Pod on the VM's disk, and waits until it is Ready as create does.
func (s *server) start(ctx context.Context, ref string, progress func(api.Event)) (api.VM, error) {
	sb, _, v, err := s.get(ctx, ref)
	if err != nil {
		return api.VM{}, err
	}
	if v.State == api.VMRunning {
		return v, nil
	}
	kept, err := s.kube.setRunning(ctx, sb.Name, true)
	if err != nil {
		return api.VM{}, err
	}
	if !kept {
		return api.VM{}, noRunningField("vm start", sb.Name)
	}
	return s.waitReady(ctx, sb, progress)
}
