;;; eglot.el --- phi-lsp through Emacs's eglot (Debian elpa-eglot), in batch mode  -*- lexical-binding: t -*-

;; Completion at the end of "    return" in add(); then add() becomes a stub and the code
;; action's command writes its body (answered at once, the edit comes as
;; workspace/applyEdit, which eglot asks the user about); then the same again with the user
;; saying no: eglot answers the server with the error "User cancelled server edit".

(load (expand-file-name "harness.el" (file-name-directory load-file-name)) nil t)
(require 'eglot)

(setq eglot-server-programs (list (cons 'python-mode (phi-env-json "PHI_CMD")))
      eglot-workspace-configuration (list :phiLsp (phi-env-json "PHI_SETTINGS"))
      eglot-confirm-server-initiated-edits 'confirm)
(phi-refuse-edits-when-told)
(advice-add 'eglot-handle-notification :before
            (lambda (_server method &rest params)
              (when (eq method 'window/showMessage)
                (push (format "%s: %s" (plist-get params :type) (plist-get params :message))
                      phi-messages))))

(defun phi-generate (server line)
  "Run the code action on add()'s def line through its command; the command's answer."
  (phi-goto-line (- line 6))
  (let* ((actions (eglot-code-actions (point) (point)))
         (command (plist-get (car actions) :command)))
    (phi-put "actions" (vconcat (mapcar (lambda (a) (plist-get a :title)) actions)))
    (eglot-execute-command server (intern (plist-get command :command))
                           (plist-get command :arguments))))

(phi-run
 (lambda ()
   (let ((line (string-to-number (getenv "PHI_LINE"))))
     (find-file (getenv "PHI_FILE"))
     (python-mode)
     (apply #'eglot (eglot--guess-contact))
     (let ((server (phi-wait-for #'eglot-current-server "eglot to connect")))
       (phi-put "server" (plist-get (eglot--server-info server) :name))
       ;; 1. Completion (empty while the model loads).
       (phi-put "completion"
                (vconcat
                 (phi-wait-for
                  (lambda ()
                    (phi-goto-line line)
                    (end-of-line)
                    (or (all-completions "" (nth 2 (eglot-completion-at-point)))
                        (progn (sleep-for 0.2) nil)))
                  "a completion item")))
       ;; 2. The code action, accepted.
       (phi-make-stub line)
       (let ((stub (buffer-string)))
         (setq phi-answer t)
         (phi-put "answer" (plist-get (phi-generate server line) :function))
         (phi-put "after_accept"
                  (phi-wait-for (lambda () (and (not (equal (buffer-string) stub))
                                                (buffer-string)))
                                "the body to be written"))
         ;; 3. Again on the stub, refused.
         (erase-buffer)
         (insert stub)
         (setq phi-answer nil)
         (phi-put "answer_refused" (plist-get (phi-generate server line) :function))
         (phi-wait-for (lambda () (= phi-asked 2)) "eglot to ask about the second edit")
         ;; A request after the refusal: the server serves on (and has logged it by now).
         (phi-put "actions_after" (length (eglot-code-actions (point) (point))))
         (phi-put "after_refuse" (buffer-string)))
       (eglot-shutdown server)))))

;;; eglot.el ends here
